"""archiveflow flows."""
