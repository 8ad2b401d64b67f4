"""Archive-size indexes: float16 vectors in shard files, searched through an IVF-PQ on disk.

Past about two million 512-d tiles (``layout.ARCHIVE_THRESHOLD_BYTES``) float32 vectors in SQLite
stop making sense: every rebuild of the search index holds them all in memory, and the folder
stores each vector at full width. Such an index keeps its rasters, tiles and footprints in SQLite
and its vectors in ``archive/`` beside it:

* ``shards``    — float16 vectors of ascending tile-id runs, one file per shard, each with its
  tile ids and a check number per vector, written once, atomically, with their SHA-256;
* ``ivfpq``     — the IVF-PQ trained on a sample, filled shard by shard into segment files,
  merged into one file FAISS maps into memory;
* ``calibrate`` — nprobe and the re-rank depth chosen for recall@10 on image and text queries;
* ``store``     — the folder and its manifest (the one file ever replaced), build and resume;
* ``layout``    — the seam to ``TileIndex``: where each tile's vector is, and the store searches use.

The command line's ``archive`` command (``engine.jobs.archive_index``) moves an index to this
layout or checks it; ``index`` moves an index by itself once it passes the threshold.
"""
