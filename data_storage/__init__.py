"""data_storage: the ETL's analyses from Kafka into MySQL, exactly once in effect."""
