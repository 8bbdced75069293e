"""The files behind the standard's three multimedia (M) fields: where they come from and what
they are, kept once per content (`files`), and collecting them while a dataset is prepared
(`attachments`)."""
