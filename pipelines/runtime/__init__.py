"""What every job shares: connecting to Ray, where outputs go (local or S3), a finished run's
files, freeing placement groups that dead jobs left, and how a command ends."""
