"""The verification harness: runs a consumer's checklist on built libraries through cffi."""
