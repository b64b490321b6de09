DROP TABLE seeding;
