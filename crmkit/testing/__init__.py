"""Test helpers for crmkit (local stand-ins of external services)."""
