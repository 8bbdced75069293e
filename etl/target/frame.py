"""The prepared frame: the columns a prepared chunk carries beside the standard's fields, set
by the pipeline (`etl.pipeline.transform`, `etl.media.attachments`) and read by the loader
(`etl.target.load`), the encryption (`etl.target.crypt`) and staging. One place, so that
neither side defines what the other sets."""

KEY = "_key"                # the source key as text: `1|A` for a two-column key
UPDATED = "_updated"        # the source's update time, as sortable text (keep the latest)
DELETED = "_deleted"        # 1: soft-deleted at the source (busType D)
SEQ = "_seq"                # the row's place in the dataset's read (dedupe's tie-break)
REJECTED = "_rejected"      # 1: a rule rejected the row (it loads nothing)
MEDIA_SHA = "_media_sha256"  # the digests of a row's attachments (etl.media.attachments): in rowHash
ID = "ID"                   # the record ID: orgNo + txCode + digest of KEY
HASH = "rowHash"            # digest of the standard fields (and MEDIA_SHA): change detection
VANISHED = "_vanished"      # in the change table: a D because the source no longer has the record
