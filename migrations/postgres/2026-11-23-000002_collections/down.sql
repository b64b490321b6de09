DROP TABLE collection_map;
