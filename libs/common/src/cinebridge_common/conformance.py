"""The reference conformance statement's tables as data (MedDream VideoStation's DICOM
Conformance Statement, kept as text in services/scp/tests/data/conformance_statement.txt).

Single source for the presentation contexts of the Storage SCP (Tables 19/22/23), the Storage
Client's proposals (Tables 9/10) and the AE defaults (Table 25).  A test parses the statement
text itself and compares it with these lists, so they are never typed twice.

Two text-extraction artefacts of that text are repaired here (and by the same rule in the test):
Table 22 merges "X-Ray 3D Angiographic" (...13.1.1) and "X-Ray 3D Craniofacial" (...13.1.2) into
one row, and spells "Intravascular" as "IntravaSCPlar".
"""

from __future__ import annotations

from typing import Final

# Table 20: DICOM application context name (PS3.7 Annex A.2.1).
APPLICATION_CONTEXT_NAME: Final = "1.2.840.10008.3.1.1.1"

# Tables 4, 8, 21: the statement's own implementation identity.  CineBridge is not VideoStation,
# so services announce their own class UID (STATEMENT_ is kept for reference and tests).
STATEMENT_IMPLEMENTATION_CLASS_UID: Final = "1.3.6.1.4.1.44316.4"
STATEMENT_IMPLEMENTATION_VERSION_NAME: Final = "MDSTATION"

# Tables 2, 5, 22 (first row): Verification SOP Class, Implicit VR Little Endian only.
VERIFICATION_SOP_CLASS: Final = ("Verification SOP Class", "1.2.840.10008.1.1")
IMPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN: Final = "1.2.840.10008.1.2.2"
JPEG_BASELINE: Final = "1.2.840.10008.1.2.4.50"

# Table 22 (Storage Server AE), every row after Verification, in the statement's order.  Each is
# accepted with every transfer syntax of Table 23, SCP role, no extended negotiation.
STORAGE_SOP_CLASSES: Final[list[tuple[str, str]]] = [
    ("Computed Radiography Image Storage", "1.2.840.10008.5.1.4.1.1.1"),
    ("Digital X-Ray Image Storage - For Presentation", "1.2.840.10008.5.1.4.1.1.1.1"),
    ("Digital X-Ray Image Storage - For Processing", "1.2.840.10008.5.1.4.1.1.1.1.1"),
    ("Digital Mammography X-Ray Image Storage - For Presentation", "1.2.840.10008.5.1.4.1.1.1.2"),
    ("Digital Mammography X-Ray Image Storage - For Processing", "1.2.840.10008.5.1.4.1.1.1.2.1"),
    ("Digital Intra-Oral X-Ray Image Storage - For Presentation", "1.2.840.10008.5.1.4.1.1.1.3"),
    ("Digital Intra-Oral X-Ray Image Storage - For Processing", "1.2.840.10008.5.1.4.1.1.1.3.1"),
    ("CT Image Storage", "1.2.840.10008.5.1.4.1.1.2"),
    ("Enhanced CT Image Storage", "1.2.840.10008.5.1.4.1.1.2.1"),
    ("Legacy Converted Enhanced CT Image Storage", "1.2.840.10008.5.1.4.1.1.2.2"),
    ("Ultrasound Multi-frame Image Storage (Retired)", "1.2.840.10008.5.1.4.1.1.3"),
    ("Ultrasound Multi-frame Image Storage", "1.2.840.10008.5.1.4.1.1.3.1"),
    ("MR Image Storage", "1.2.840.10008.5.1.4.1.1.4"),
    ("Enhanced MR Image Storage", "1.2.840.10008.5.1.4.1.1.4.1"),
    ("MR Spectroscopy Storage", "1.2.840.10008.5.1.4.1.1.4.2"),
    ("Enhanced MR Color Image Storage", "1.2.840.10008.5.1.4.1.1.4.3"),
    ("Legacy Converted Enhanced MR Image Storage", "1.2.840.10008.5.1.4.1.1.4.4"),
    ("Nuclear Medicine Image Storage (Retired)", "1.2.840.10008.5.1.4.1.1.5"),
    ("Ultrasound Image Storage (Retired)", "1.2.840.10008.5.1.4.1.1.6"),
    ("Ultrasound Image Storage", "1.2.840.10008.5.1.4.1.1.6.1"),
    ("Enhanced US Volume Storage", "1.2.840.10008.5.1.4.1.1.6.2"),
    ("Secondary Capture Image Storage", "1.2.840.10008.5.1.4.1.1.7"),
    ("Multi-frame Single Bit Secondary Capture Image Storage", "1.2.840.10008.5.1.4.1.1.7.1"),
    ("Multi-frame Grayscale Byte Secondary Capture Image Storage", "1.2.840.10008.5.1.4.1.1.7.2"),
    ("Multi-frame Grayscale Word Secondary Capture Image Storage", "1.2.840.10008.5.1.4.1.1.7.3"),
    ("Multi-frame True Color Secondary Capture Image Storage", "1.2.840.10008.5.1.4.1.1.7.4"),
    ("Standalone Overlay Storage (Retired)", "1.2.840.10008.5.1.4.1.1.8"),
    ("Standalone Curve Storage (Retired)", "1.2.840.10008.5.1.4.1.1.9"),
    ("Waveform Storage - Trial (Retired)", "1.2.840.10008.5.1.4.1.1.9.1"),
    ("12-lead ECG Waveform Storage", "1.2.840.10008.5.1.4.1.1.9.1.1"),
    ("General ECG Waveform Storage", "1.2.840.10008.5.1.4.1.1.9.1.2"),
    ("Ambulatory ECG Waveform Storage", "1.2.840.10008.5.1.4.1.1.9.1.3"),
    ("Hemodynamic Waveform Storage", "1.2.840.10008.5.1.4.1.1.9.2.1"),
    ("Cardiac Electrophysiology Waveform Storage", "1.2.840.10008.5.1.4.1.1.9.3.1"),
    ("Basic Voice Audio Waveform Storage", "1.2.840.10008.5.1.4.1.1.9.4.1"),
    ("General Audio Waveform Storage", "1.2.840.10008.5.1.4.1.1.9.4.2"),
    ("Arterial Pulse Waveform Storage", "1.2.840.10008.5.1.4.1.1.9.5.1"),
    ("Respiratory Waveform Storage", "1.2.840.10008.5.1.4.1.1.9.6.1"),
    ("Multi-channel Respiratory Waveform Storage", "1.2.840.10008.5.1.4.1.1.9.6.2"),
    ("Routine Scalp Electroencephalogram Waveform Storage", "1.2.840.10008.5.1.4.1.1.9.7.1"),
    ("Electromyogram Waveform Storage", "1.2.840.10008.5.1.4.1.1.9.7.2"),
    ("Electrooculogram Waveform Storage", "1.2.840.10008.5.1.4.1.1.9.7.3"),
    ("Sleep Electroencephalogram Waveform Storage", "1.2.840.10008.5.1.4.1.1.9.7.4"),
    ("Body Position Waveform Storage", "1.2.840.10008.5.1.4.1.1.9.8.1"),
    ("Standalone Modality LUT Storage (Retired)", "1.2.840.10008.5.1.4.1.1.10"),
    ("Standalone VOI LUT Storage (Retired)", "1.2.840.10008.5.1.4.1.1.11"),
    ("Grayscale Softcopy Presentation State Storage", "1.2.840.10008.5.1.4.1.1.11.1"),
    ("Color Softcopy Presentation State Storage", "1.2.840.10008.5.1.4.1.1.11.2"),
    ("Pseudo-Color Softcopy Presentation State Storage", "1.2.840.10008.5.1.4.1.1.11.3"),
    ("Blending Softcopy Presentation State Storage", "1.2.840.10008.5.1.4.1.1.11.4"),
    ("XA/XRF Grayscale Softcopy Presentation State Storage", "1.2.840.10008.5.1.4.1.1.11.5"),
    ("Grayscale Planar MPR Volumetric Presentation State Storage", "1.2.840.10008.5.1.4.1.1.11.6"),
    (
        "Compositing Planar MPR Volumetric Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.11.7",
    ),
    ("Advanced Blending Presentation State Storage", "1.2.840.10008.5.1.4.1.1.11.8"),
    ("Volume Rendering Volumetric Presentation State Storage", "1.2.840.10008.5.1.4.1.1.11.9"),
    (
        "Segmented Volume Rendering Volumetric Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.11.10",
    ),
    (
        "Multiple Volume Rendering Volumetric Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.11.11",
    ),
    ("X-Ray Angiographic Image Storage", "1.2.840.10008.5.1.4.1.1.12.1"),
    ("Enhanced XA Image Storage", "1.2.840.10008.5.1.4.1.1.12.1.1"),
    ("X-Ray Radiofluoroscopic Image Storage", "1.2.840.10008.5.1.4.1.1.12.2"),
    ("Enhanced XRF Image Storage", "1.2.840.10008.5.1.4.1.1.12.2.1"),
    ("X-Ray Angiographic Bi-Plane Image Storage (Retired)", "1.2.840.10008.5.1.4.1.1.12.3"),
    ("X-Ray 3D Angiographic Image Storage", "1.2.840.10008.5.1.4.1.1.13.1.1"),
    ("X-Ray 3D Craniofacial Image Storage", "1.2.840.10008.5.1.4.1.1.13.1.2"),
    ("Breast Tomosynthesis Image Storage", "1.2.840.10008.5.1.4.1.1.13.1.3"),
    ("Breast Projection X-Ray Image Storage - For Presentation", "1.2.840.10008.5.1.4.1.1.13.1.4"),
    ("Breast Projection X-Ray Image Storage - For Processing", "1.2.840.10008.5.1.4.1.1.13.1.5"),
    (
        "Intravascular Optical Coherence Tomography Image Storage - For Presentation",
        "1.2.840.10008.5.1.4.1.1.14.1",
    ),
    (
        "Intravascular Optical Coherence Tomography Image Storage - For Processing",
        "1.2.840.10008.5.1.4.1.1.14.2",
    ),
    ("Nuclear Medicine Image Storage", "1.2.840.10008.5.1.4.1.1.20"),
    ("Parametric Map Storage", "1.2.840.10008.5.1.4.1.1.30"),
    ("MR Image Storage Zero Padded (Retired)", "1.2.840.10008.5.1.4.1.1.40"),
    ("Raw Data Storage", "1.2.840.10008.5.1.4.1.1.66"),
    ("Spatial Registration Storage", "1.2.840.10008.5.1.4.1.1.66.1"),
    ("Spatial Fiducials Storage", "1.2.840.10008.5.1.4.1.1.66.2"),
    ("Deformable Spatial Registration Storage", "1.2.840.10008.5.1.4.1.1.66.3"),
    ("Segmentation Storage", "1.2.840.10008.5.1.4.1.1.66.4"),
    ("Surface Segmentation Storage", "1.2.840.10008.5.1.4.1.1.66.5"),
    ("Tractography Results Storage", "1.2.840.10008.5.1.4.1.1.66.6"),
    ("Real World Value Mapping Storage", "1.2.840.10008.5.1.4.1.1.67"),
    ("Surface Scan Mesh Storage", "1.2.840.10008.5.1.4.1.1.68.1"),
    ("Surface Scan Point Cloud Storage", "1.2.840.10008.5.1.4.1.1.68.2"),
    ("VL Image Storage - Trial (Retired)", "1.2.840.10008.5.1.4.1.1.77.1"),
    ("VL Multi-frame Image Storage - Trial (Retired)", "1.2.840.10008.5.1.4.1.1.77.2"),
    ("VL Endoscopic Image Storage", "1.2.840.10008.5.1.4.1.1.77.1.1"),
    ("Video Endoscopic Image Storage", "1.2.840.10008.5.1.4.1.1.77.1.1.1"),
    ("VL Microscopic Image Storage", "1.2.840.10008.5.1.4.1.1.77.1.2"),
    ("Video Microscopic Image Storage", "1.2.840.10008.5.1.4.1.1.77.1.2.1"),
    ("VL Slide-Coordinates Microscopic Image Storage", "1.2.840.10008.5.1.4.1.1.77.1.3"),
    ("VL Photographic Image Storage", "1.2.840.10008.5.1.4.1.1.77.1.4"),
    ("Video Photographic Image Storage", "1.2.840.10008.5.1.4.1.1.77.1.4.1"),
    ("Ophthalmic Photography 8 Bit Image Storage", "1.2.840.10008.5.1.4.1.1.77.1.5.1"),
    ("Ophthalmic Photography 16 Bit Image Storage", "1.2.840.10008.5.1.4.1.1.77.1.5.2"),
    ("Stereometric Relationship Storage", "1.2.840.10008.5.1.4.1.1.77.1.5.3"),
    ("Ophthalmic Tomography Image Storage", "1.2.840.10008.5.1.4.1.1.77.1.5.4"),
    (
        "Wide Field Ophthalmic Photography Stereographic Projection Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.5.5",
    ),
    (
        "Wide Field Ophthalmic Photography 3D Coordinates Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.5.6",
    ),
    (
        "Ophthalmic Optical Coherence Tomography En Face Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.5.7",
    ),
    (
        "Ophthalmic Optical Coherence Tomography B-scan Volume Analysis Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.5.8",
    ),
    ("VL Whole Slide Microscopy Image Storage", "1.2.840.10008.5.1.4.1.1.77.1.6"),
    ("Dermoscopic Photography Image Storage", "1.2.840.10008.5.1.4.1.1.77.1.7"),
    ("Lensometry Measurements Storage", "1.2.840.10008.5.1.4.1.1.78.1"),
    ("Autorefracton Measurements Storage", "1.2.840.10008.5.1.4.1.1.78.2"),
    ("Keratometry Measurements Storage", "1.2.840.10008.5.1.4.1.1.78.3"),
    ("Subjective Refraction Measurements Storage", "1.2.840.10008.5.1.4.1.1.78.4"),
    ("Visual Acuity Measurements Storage", "1.2.840.10008.5.1.4.1.1.78.5"),
    ("Spectacle Prescription Report Storage", "1.2.840.10008.5.1.4.1.1.78.6"),
    ("Ophthalmic Axial Measurements Storage", "1.2.840.10008.5.1.4.1.1.78.7"),
    ("Intraocular Lens Calculations Storage", "1.2.840.10008.5.1.4.1.1.78.8"),
    ("Macular Grid Thickness and Volume Report Storage", "1.2.840.10008.5.1.4.1.1.79.1"),
    (
        "Ophthalmic Visual Field Static Perimetry Measurements Storage",
        "1.2.840.10008.5.1.4.1.1.80.1",
    ),
    ("Ophthalmic Thickness Map Storage", "1.2.840.10008.5.1.4.1.1.81.1"),
    ("Corneal Topography Map Storage", "1.2.840.10008.5.1.4.1.1.82.1"),
    ("Text SR Storage - Trial (Retired)", "1.2.840.10008.5.1.4.1.1.88.1"),
    ("Audio SR Storage - Trial (Retired)", "1.2.840.10008.5.1.4.1.1.88.2"),
    ("Detail SR Storage - Trial (Retired)", "1.2.840.10008.5.1.4.1.1.88.3"),
    ("Comprehensive SR Storage - Trial (Retired)", "1.2.840.10008.5.1.4.1.1.88.4"),
    ("Basic Text SR Storage", "1.2.840.10008.5.1.4.1.1.88.11"),
    ("Enhanced SR Storage", "1.2.840.10008.5.1.4.1.1.88.22"),
    ("Comprehensive SR Storage", "1.2.840.10008.5.1.4.1.1.88.33"),
    ("Comprehensive 3D SR Storage", "1.2.840.10008.5.1.4.1.1.88.34"),
    ("Extensible SR Storage", "1.2.840.10008.5.1.4.1.1.88.35"),
    ("Procedure Log Storage", "1.2.840.10008.5.1.4.1.1.88.40"),
    ("Mammography CAD SR Storage", "1.2.840.10008.5.1.4.1.1.88.50"),
    ("Key Object Selection Document Storage", "1.2.840.10008.5.1.4.1.1.88.59"),
    ("Chest CAD SR Storage", "1.2.840.10008.5.1.4.1.1.88.65"),
    ("X-Ray Radiation Dose SR Storage", "1.2.840.10008.5.1.4.1.1.88.67"),
    ("Radiopharmaceutical Radiation Dose SR Storage", "1.2.840.10008.5.1.4.1.1.88.68"),
    ("Colon CAD SR Storage", "1.2.840.10008.5.1.4.1.1.88.69"),
    ("Implantation Plan SR Storage", "1.2.840.10008.5.1.4.1.1.88.70"),
    ("Acquisition Context SR Storage", "1.2.840.10008.5.1.4.1.1.88.71"),
    ("Simplified Adult Echo SR Storage", "1.2.840.10008.5.1.4.1.1.88.72"),
    ("Patient Radiation Dose SR Storage", "1.2.840.10008.5.1.4.1.1.88.73"),
    ("Planned Imaging Agent Administration SR Storage", "1.2.840.10008.5.1.4.1.1.88.74"),
    ("Performed Imaging Agent Administration SR Storage", "1.2.840.10008.5.1.4.1.1.88.75"),
    ("Content Assessment Results Storage", "1.2.840.10008.5.1.4.1.1.90.1"),
    ("Encapsulated PDF Storage", "1.2.840.10008.5.1.4.1.1.104.1"),
    ("Encapsulated CDA Storage", "1.2.840.10008.5.1.4.1.1.104.2"),
    ("Encapsulated STL Storage", "1.2.840.10008.5.1.4.1.1.104.3"),
    ("Encapsulated OBJ Storage", "1.2.840.10008.5.1.4.1.1.104.4"),
    ("Encapsulated MTL Storage", "1.2.840.10008.5.1.4.1.1.104.5"),
    ("Positron Emission Tomography Image Storage", "1.2.840.10008.5.1.4.1.1.128"),
    ("Legacy Converted Enhanced PET Image Storage", "1.2.840.10008.5.1.4.1.1.128.1"),
    ("Standalone PET Curve Storage (Retired)", "1.2.840.10008.5.1.4.1.1.129"),
    ("Enhanced PET Image Storage", "1.2.840.10008.5.1.4.1.1.130"),
    ("Basic Structured Display Storage", "1.2.840.10008.5.1.4.1.1.131"),
    ("CT Defined Procedure Protocol Storage", "1.2.840.10008.5.1.4.1.1.200.1"),
    ("CT Performed Procedure Protocol Storage", "1.2.840.10008.5.1.4.1.1.200.2"),
    ("RT Image Storage", "1.2.840.10008.5.1.4.1.1.481.1"),
    ("RT Dose Storage", "1.2.840.10008.5.1.4.1.1.481.2"),
    ("RT Structure Set Storage", "1.2.840.10008.5.1.4.1.1.481.3"),
    ("RT Beams Treatment Record Storage", "1.2.840.10008.5.1.4.1.1.481.4"),
    ("RT Plan Storage", "1.2.840.10008.5.1.4.1.1.481.5"),
    ("RT Brachy Treatment Record Storage", "1.2.840.10008.5.1.4.1.1.481.6"),
    ("RT Treatment Summary Record Storage", "1.2.840.10008.5.1.4.1.1.481.7"),
    ("RT Ion Plan Storage", "1.2.840.10008.5.1.4.1.1.481.8"),
    ("RT Ion Beams Treatment Record Storage", "1.2.840.10008.5.1.4.1.1.481.9"),
    ("RT Physician Intent Storage", "1.2.840.10008.5.1.4.1.1.481.10"),
    ("RT Segment Annotation Storage", "1.2.840.10008.5.1.4.1.1.481.11"),
    ("RT Radiation Set Storage", "1.2.840.10008.5.1.4.1.1.481.12"),
    ("C-Arm Photon-Electron Radiation Storage", "1.2.840.10008.5.1.4.1.1.481.13"),
    ("Tomotherapeutic Radiation Storage", "1.2.840.10008.5.1.4.1.1.481.14"),
    ("Robotic-Arm Radiation Storage", "1.2.840.10008.5.1.4.1.1.481.15"),
    ("RT Radiation Record Set Storage", "1.2.840.10008.5.1.4.1.1.481.16"),
    ("RT Radiation Salvage Record Storage", "1.2.840.10008.5.1.4.1.1.481.17"),
    ("Tomotherapeutic Radiation Record Storage", "1.2.840.10008.5.1.4.1.1.481.18"),
    ("C-Arm Photon-Electron Radiation Record Storage", "1.2.840.10008.5.1.4.1.1.481.19"),
    ("Robotic Radiation Record Storage", "1.2.840.10008.5.1.4.1.1.481.20"),
    ("DICOS CT Image Storage", "1.2.840.10008.5.1.4.1.1.501.1"),
    ("DICOS Digital X-Ray Image Storage - For Presentation", "1.2.840.10008.5.1.4.1.1.501.2.1"),
    ("DICOS Digital X-Ray Image Storage - For Processing", "1.2.840.10008.5.1.4.1.1.501.2.2"),
    ("DICOS Threat Detection Report Storage", "1.2.840.10008.5.1.4.1.1.501.3"),
    ("DICOS 2D AIT Storage", "1.2.840.10008.5.1.4.1.1.501.4"),
    ("DICOS 3D AIT Storage", "1.2.840.10008.5.1.4.1.1.501.5"),
    ("DICOS Quadrupole Resonance (QR) Storage", "1.2.840.10008.5.1.4.1.1.501.6"),
    ("Eddy Current Image Storage", "1.2.840.10008.5.1.4.1.1.601.1"),
    ("Eddy Current Multi-frame Image Storage", "1.2.840.10008.5.1.4.1.1.601.2"),
    ("RT Beams Delivery Instruction Storage - Trial (Retired)", "1.2.840.10008.5.1.4.34.1"),
    ("RT Conventional Machine Verification - Trial (Retired)", "1.2.840.10008.5.1.4.34.2"),
    ("RT Ion Machine Verification - Trial (Retired)", "1.2.840.10008.5.1.4.34.3"),
    ("RT Beams Delivery Instruction Storage", "1.2.840.10008.5.1.4.34.7"),
    ("RT Brachy Application Setup Delivery Instruction Storage", "1.2.840.10008.5.1.4.34.10"),
    ("Hanging Protocol Storage", "1.2.840.10008.5.1.4.38.1"),
    ("Color Palette Storage", "1.2.840.10008.5.1.4.39.1"),
    ("Generic Implant Template Storage", "1.2.840.10008.5.1.4.43.1"),
    ("Implant Assembly Template Storage", "1.2.840.10008.5.1.4.44.1"),
    ("Implant Template Group Storage", "1.2.840.10008.5.1.4.45.1"),
    ("Private TomTec Annotation Storage", "1.2.276.0.48.5.1.4.1.1.7"),
    ("Private Toshiba US Image Storage", "1.2.392.200036.9116.7.8.1.1.1"),
    ("Private Fuji CR Image Storage", "1.2.392.200036.9125.1.1.2"),
    ("Private GE Collage Storage", "1.2.528.1.1001.5.1.1.1"),
    ("Private ERAD Practice Builder Report Text Storage", "1.2.826.0.1.3680043.293.1.0.1"),
    ("Private ERAD Practice Builder Report Dictation Storage", "1.2.826.0.1.3680043.293.1.0.2"),
    ("Private Philips HP Live 3D 01 Storage", "1.2.840.113543.6.6.1.3.10001"),
    ("Private Philips HP Live 3D 02 Storage", "1.2.840.113543.6.6.1.3.10002"),
    ("Private GE 3D Model Storage", "1.2.840.113619.4.26"),
    ("Private GE PET Raw Data Storage", "1.2.840.113619.4.30"),
    ("Private GE RT Plan Storage", "1.2.840.113619.4.5.249"),
    ("Private PixelMed Legacy Converted Enhanced CT Image Storage", "1.3.6.1.4.1.5962.301.1"),
    ("Private PixelMed Legacy Converted Enhanced MR Image Storage", "1.3.6.1.4.1.5962.301.2"),
    ("Private PixelMed Legacy Converted Enhanced PET Image Storage", "1.3.6.1.4.1.5962.301.3"),
    ("Private PixelMed Floating Point Image Storage", "1.3.6.1.4.1.5962.301.9"),
    ("Private Siemens CSA Non Image Storage", "1.3.12.2.1107.5.9.1"),
    ("Private Siemens CT MR Volume Storage", "1.3.12.2.1107.5.99.3.10"),
    ("Private Siemens AX Frame Sets Storage", "1.3.12.2.1107.5.99.3.11"),
    ("Private Philips Specialised XA Storage", "1.3.46.670589.2.3.1.1"),
    ("Private Philips CX Image Storage", "1.3.46.670589.2.4.1.1"),
    ("Private Philips 3D Presentation State Storage", "1.3.46.670589.2.5.1.1"),
    ("Private Philips VRML Storage", "1.3.46.670589.2.8.1.1"),
    ("Private Philips Volume Set Storage", "1.3.46.670589.2.11.1.1"),
    ("Private Philips Volume Storage (Retired)", "1.3.46.670589.5.0.1"),
    ("Private Philips Volume Storage", "1.3.46.670589.5.0.1.1"),
    ("Private Philips 3D Object Storage (Retired)", "1.3.46.670589.5.0.2"),
    ("Private Philips 3D Object Storage", "1.3.46.670589.5.0.2.1"),
    ("Private Philips Surface Storage (Retired)", "1.3.46.670589.5.0.3"),
    ("Private Philips Surface Storage", "1.3.46.670589.5.0.3.1"),
    ("Private Philips Composite Object Storage", "1.3.46.670589.5.0.4"),
    ("Private Philips MR Cardio Profile Storage", "1.3.46.670589.5.0.7"),
    ("Private Philips MR Cardio Storage (Retired)", "1.3.46.670589.5.0.8"),
    ("Private Philips MR Cardio Storage", "1.3.46.670589.5.0.8.1"),
    ("Private Philips CT Synthetic Image Storage", "1.3.46.670589.5.0.9"),
    ("Private Philips MR Synthetic Image Storage", "1.3.46.670589.5.0.10"),
    ("Private Philips MR Cardio Analysis Storage (Retired)", "1.3.46.670589.5.0.11"),
    ("Private Philips MR Cardio Analysis Storage", "1.3.46.670589.5.0.11.1"),
    ("Private Philips CX Synthetic Image Storage", "1.3.46.670589.5.0.12"),
    ("Private Philips Perfusion Storage", "1.3.46.670589.5.0.13"),
    ("Private Philips Perfusion Image Storage", "1.3.46.670589.5.0.14"),
    ("Private Philips X-Ray MF Storage", "1.3.46.670589.7.8.1618510091"),
    ("Private Philips Live Run Storage", "1.3.46.670589.7.8.1618510092"),
    ("Private Philips Run Storage", "1.3.46.670589.7.8.16185100129"),
    ("Private Philips Reconstruction Storage", "1.3.46.670589.7.8.16185100130"),
    ("Private Philips MR Spectrum Storage", "1.3.46.670589.11.0.0.12.1"),
    ("Private Philips MR Series Data Storage", "1.3.46.670589.11.0.0.12.2"),
    ("Private Philips MR Color Image Storage", "1.3.46.670589.11.0.0.12.3"),
    ("Private Philips MR Examcard Storage", "1.3.46.670589.11.0.0.12.4"),
    ("Private PMOD Multi-frame Image Storage", "2.16.840.1.114033.5.1.4.1.1.130"),
]

# Table 23: transfer syntaxes accepted for received SOP instances, in the statement's order.
SCP_TRANSFER_SYNTAXES: Final[list[tuple[str, str]]] = [
    ("Implicit VR Little Endian", "1.2.840.10008.1.2"),
    ("Explicit VR Little Endian", "1.2.840.10008.1.2.1"),
    ("Deflated Explicit VR Little Endian", "1.2.840.10008.1.2.1.99"),
    ("Explicit VR Big Endian", "1.2.840.10008.1.2.2"),
    ("JPEG Baseline (Process 1)", "1.2.840.10008.1.2.4.50"),
    ("JPEG Extended (Process 2 & 4)", "1.2.840.10008.1.2.4.51"),
    ("JPEG Extended (Process 3 & 5) (Retired)", "1.2.840.10008.1.2.4.52"),
    (
        "JPEG Spectral Selection, Non-Hierarchical (Process 6 & 8) (Retired)",
        "1.2.840.10008.1.2.4.53",
    ),
    (
        "JPEG Spectral Selection, Non-Hierarchical (Process 7 & 9) (Retired)",
        "1.2.840.10008.1.2.4.54",
    ),
    (
        "JPEG Full Progression, Non-Hierarchical (Process 10 & 12) (Retired)",
        "1.2.840.10008.1.2.4.55",
    ),
    (
        "JPEG Full Progression, Non-Hierarchical (Process 11 & 13) (Retired)",
        "1.2.840.10008.1.2.4.56",
    ),
    ("JPEG Lossless, Non-Hierarchical (Process 14)", "1.2.840.10008.1.2.4.57"),
    ("JPEG Lossless, Non-Hierarchical (Process 15) (Retired)", "1.2.840.10008.1.2.4.58"),
    ("JPEG Extended, Hierarchical (Process 16 & 18) (Retired)", "1.2.840.10008.1.2.4.59"),
    ("JPEG Extended, Hierarchical (Process 17 & 19) (Retired)", "1.2.840.10008.1.2.4.60"),
    ("JPEG Spectral Selection, Hierarchical (Process 20 & 22) (Retired)", "1.2.840.10008.1.2.4.61"),
    ("JPEG Spectral Selection, Hierarchical (Process 21 & 23) (Retired)", "1.2.840.10008.1.2.4.62"),
    ("JPEG Full Progression, Hierarchical (Process 24 & 26) (Retired)", "1.2.840.10008.1.2.4.63"),
    ("JPEG Full Progression, Hierarchical (Process 25 & 27) (Retired)", "1.2.840.10008.1.2.4.64"),
    ("JPEG Lossless, Hierarchical (Process 28) (Retired)", "1.2.840.10008.1.2.4.65"),
    ("JPEG Lossless, Hierarchical (Process 29) (Retired)", "1.2.840.10008.1.2.4.66"),
    (
        "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
        "1.2.840.10008.1.2.4.70",
    ),
    ("JPEG-LS Lossless Image Compression", "1.2.840.10008.1.2.4.80"),
    ("JPEG-LS Lossy (Near-Lossless) Image Compression", "1.2.840.10008.1.2.4.81"),
    ("JPEG 2000 Image Compression (Lossless Only)", "1.2.840.10008.1.2.4.90"),
    ("JPEG 2000 Image Compression", "1.2.840.10008.1.2.4.91"),
    (
        "JPEG 2000 Part 2 Multi-component Image Compression (Lossless Only)",
        "1.2.840.10008.1.2.4.92",
    ),
    ("JPEG 2000 Part 2 Multi-component Image Compression", "1.2.840.10008.1.2.4.93"),
    ("JPIP Referenced", "1.2.840.10008.1.2.4.94"),
    ("JPIP Referenced Deflate", "1.2.840.10008.1.2.4.95"),
    ("MPEG-2 Main Profile @ Main Level", "1.2.840.10008.1.2.4.100"),
    ("MPEG-2 Main Profile @ High Level", "1.2.840.10008.1.2.4.101"),
    ("MPEG-4 AVC/H.264 High Profile / Level 4.1", "1.2.840.10008.1.2.4.102"),
    ("MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1", "1.2.840.10008.1.2.4.103"),
    ("MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video", "1.2.840.10008.1.2.4.104"),
    ("MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video", "1.2.840.10008.1.2.4.105"),
    ("MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2", "1.2.840.10008.1.2.4.106"),
    ("HEVC/H.265 Main Profile / Level 5.1", "1.2.840.10008.1.2.4.107"),
    ("HEVC/H.265 Main 10 Profile / Level 5.1", "1.2.840.10008.1.2.4.108"),
    ("RLE Lossless", "1.2.840.10008.1.2.5"),
    ("RFC 2557 MIME encapsulation (Retired)", "1.2.840.10008.1.2.6.1"),
    ("XML Encoding (Retired)", "1.2.840.10008.1.2.6.2"),
    ("SMPTE ST 2110-20 Uncompressed Progressive Active Video", "1.2.840.10008.1.2.7.1"),
    ("SMPTE ST 2110-20 Uncompressed Interlaced Active Video", "1.2.840.10008.1.2.7.2"),
    ("SMPTE ST 2110-30 PCM Digital Audio", "1.2.840.10008.1.2.7.3"),
]

# Table 24: C-STORE response statuses of the Storage Server (PS3.4 B.2.3).  A700 ("Refused: Out of
# Resources", PS3.4 Table B.2-1) is added for disk full / database down, as the issue requires.
STATUS_SUCCESS: Final = 0x0000
STATUS_PROCESSING_FAILURE: Final = 0x0110
STATUS_OUT_OF_RESOURCES: Final = 0xA700

# Table 6 / Table 9: the Storage Client proposes Secondary Capture Image Storage ...
SENDER_SOP_CLASSES: Final[list[tuple[str, str]]] = [
    ("Secondary Capture Image Storage", "1.2.840.10008.5.1.4.1.1.7"),
]

# ... with the transfer syntaxes of Table 10.  Footnote 1 of Table 10: Implicit VR Little Endian
# is offered together with each compressed syntax (PS3.5 10.1 requires ILE support to be offered).
SENDER_TRANSFER_SYNTAXES: Final[list[tuple[str, str]]] = [
    ("Implicit VR Little Endian", "1.2.840.10008.1.2"),
    ("JPEG Baseline (Process 1)", "1.2.840.10008.1.2.4.50"),
    ("MPEG-2 Main Profile Main Level", "1.2.840.10008.1.2.4.100"),
    ("MPEG-2 Main Profile High Level", "1.2.840.10008.1.2.4.101"),
    ("MPEG-4 AVC/H.264 High Profile / Level 4.1", "1.2.840.10008.1.2.4.102"),
    ("MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1", "1.2.840.10008.1.2.4.103"),
]

# Table 25: AE title configuration.  The Verification Client's default is "SPACS"; the Storage
# Client and Worklist Client share the single local AE title (§4.4.1.1).  The Storage Server's
# default AE title cell is empty, so CineBridge names its SCP "CINEBRIDGE" (a blank Called AE
# cannot be addressed by peers; see services/scp/README.md).  Its default port is 104; the
# development default is 11112 (unprivileged, the DICOM registered alternative, PS3.8 Annex G).
DEFAULT_CLIENT_AE_TITLE: Final = "SPACS"
DEFAULT_SCP_AE_TITLE: Final = "CINEBRIDGE"
DEFAULT_SCP_PORT: Final = 104
DEV_SCP_PORT: Final = 11112
# PS3.15 Annex B.1: the DICOM port for the TLS secure transport connection profile.
DEFAULT_SCP_TLS_PORT: Final = 2762

STORAGE_SOP_CLASS_UIDS: Final[frozenset[str]] = frozenset(uid for _, uid in STORAGE_SOP_CLASSES)
SCP_TRANSFER_SYNTAX_UIDS: Final[frozenset[str]] = frozenset(uid for _, uid in SCP_TRANSFER_SYNTAXES)


def storage_sop_class_name(uid: str) -> str | None:
    """Return the Table 22 name of a storage SOP class UID, or None when not listed."""
    return _SOP_NAMES.get(uid)


_SOP_NAMES: Final[dict[str, str]] = dict((uid, name) for name, uid in STORAGE_SOP_CLASSES)
