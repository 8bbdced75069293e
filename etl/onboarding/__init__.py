"""Bringing units in: drafting a mapping from a source's catalogue (`scaffold`), writing unit
files from a register (`onboard`), and the demo units with their sample attachments
(`demo_data`, `sample_files`)."""
