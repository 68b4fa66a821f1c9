"""archiveflow deployments."""
