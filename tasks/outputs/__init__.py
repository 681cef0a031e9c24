"""What leaves murmur with a job: its transcript rendered (`formats`), written to S3 (`s3`), its webhook
(`webhook`), and the uploads the HTTP API stored for it (`uploads`), removed with it."""
