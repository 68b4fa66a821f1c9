"""archiveflow tasks."""
