"""The interface route (5.2.2): units push their records to us over HTTPS."""
