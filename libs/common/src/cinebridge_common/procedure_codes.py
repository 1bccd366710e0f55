"""Coded reasons the station sends: PS3.16 CID 9300 "Procedure Discontinuation Reasons"
(coding scheme DCM, PS3.16 Annex D), for the MPPS Performed Procedure Step Discontinuation
Reason Code Sequence (0040,0281) (PS3.4 F.7.2)."""

from __future__ import annotations

#: Code Value → Code Meaning, in the order of CID 9300.
DISCONTINUATION_REASONS: dict[str, str] = {
    "110500": "Doctor canceled procedure",
    "110501": "Equipment failure",
    "110502": "Incorrect procedure ordered",
    "110503": "Patient allergic to media/contrast",
    "110504": "Patient died",
    "110505": "Patient refused to continue procedure",
    "110506": "Patient taken for treatment or surgery",
    "110507": "Patient did not arrive",
    "110508": "Patient pregnant",
    "110509": "Change of procedure for correct charging",
    "110510": "Duplicate order",
    "110511": "Nursing unit cancel",
    "110512": "Incorrect side ordered",
    "110513": "Discontinued for unspecified reason",
    "110514": "Incorrect worklist entry selected",
    "110515": "Patient condition prevented continuing",
    "110516": "Equipment change",
    "110521": "Objects incorrectly formatted",
    "110522": "Object Types not supported",
    "110523": "Object Set incomplete",
    "110524": "Media Failure",
    "110526": "Resource pre-empted",
    "110527": "Resource inadequate",
    "110528": "Discontinued Procedure Step rescheduled",
    "110529": "Discontinued Procedure Step rescheduling recommended",
    "110530": "Workitem assignment rejected by assigned resource",
    "110533": "Workitem expired",
    "113568": "Extravasation visible in image",
}
