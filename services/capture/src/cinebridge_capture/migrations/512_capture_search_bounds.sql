-- Capture: covering prefix indexes of the study catalog for the Local search
-- (services/gateway/README.md "Local search"). The search first counts, up to a small cap, the
-- studies whose name, patient ID or accession starts with the text, to choose how it finds
-- the page. With the column itself in the index that count is an index-only scan that stops
-- at its cap; on the expression indexes of 601_gateway.sql alone it read every entry of the
-- prefix into a bitmap and then the rows (~4,200 of each for a common surname at 100,000
-- studies). Dates are counted on gateway_studies_date, which holds its column already.
CREATE INDEX studies_name_prefix_covering ON studies (lower(patient_name) text_pattern_ops)
    INCLUDE (patient_name);
CREATE INDEX studies_patient_id_prefix_covering ON studies (lower(patient_id) text_pattern_ops)
    INCLUDE (patient_id);
CREATE INDEX studies_accession_prefix_covering
    ON studies (lower(accession_number) text_pattern_ops) INCLUDE (accession_number);
