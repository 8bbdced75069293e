"""A unit's own database: connecting (`connect`), reading rows (`extract`), checking it and its
account before a run (`account`)."""
