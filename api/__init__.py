"""`murmur serve`: an HTTP door to the fleet, OpenAI's transcription contract plus jobs for long audio."""
