-- The retention byte cap counts UTF-8 bytes: recount the sizes stored
-- before, which counted characters.
UPDATE messages SET size = length(CAST(envelope AS BLOB));
