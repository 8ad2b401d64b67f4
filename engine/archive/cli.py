"""``python -m engine archive``: move an index's vectors to the archive layout, or check an archived index."""
from __future__ import annotations


def add_archive_parser(sub) -> None:
    p = sub.add_parser("archive", help="keep an index's vectors as float16 shards searched through an on-disk "
                                       "IVF-PQ (for indexes of millions of tiles; indexes move there by themselves "
                                       "past about a million 512-d tiles)")
    p.add_argument("--index", required=True, metavar="DIR")
    p.add_argument("--verify", action="store_true", help="only read every archive file back and check it (SHA-256 "
                   "of every shard and search segment, a check number per vector); changes nothing")


def run_archive(args, progress) -> int:
    from .. import jobs

    report = jobs.archive_index(args.index, verify=args.verify, progress=progress)
    print(report.summary())
    return 0
