"""What people read: run summaries and tables in the terminal (`text`), the run records summed
up (`results`), timeliness (`freshness`), the comparison of a unit's source with the target
(`reconcile`, kept results read back by `reconciled`), and the static report site (`site`)."""
