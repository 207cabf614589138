"""Crash-proof WhatsApp template campaigns: the domain package every function imports."""
