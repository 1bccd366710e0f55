-- The procedure's modality on the study (statement Table 38: "Exist" attribute (0008,0060),
-- from the worklist's Scheduled Procedure Step > Modality). Written when a study starts from
-- or is reconciled with a worklist item (gateway, worklist service) and by a manual edit; it
-- stays when the edit unlinks the study from the worklist (§8.1.5). Empty: the station default.
ALTER TABLE studies ADD COLUMN modality text NOT NULL DEFAULT '';
