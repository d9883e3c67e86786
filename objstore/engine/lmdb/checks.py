"""Checks of a store against its objects' bytes: verify, and the repair of the rows that
derive from those bytes (closures, the ids and locations object rows and index entries
hold). Objects carry checksums; the rows around them do not, so these read the objects."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import xxhash

from objstore import codec, errors
from objstore.codec import digest_of
from objstore.compression import CodecError
from objstore.engine.base import VerifyReport
from objstore.engine.environment import DAMAGED
from objstore.engine.layout import (
    DIGEST_SIZE,
    INDEX_ROW,
    PLACE,
    REF,
    ROW,
    U32,
    U64,
    closure_columns,
    encode_closures,
    object_key,
)
from objstore.engine.lmdb.reads import CHUNK
from objstore.engine.lmdb.transactions import Environment

_ANY_PID = U32.pack(0)  # object keys compared without their project number


def _name_of(id_part: bytes) -> int:
    """An id part (:func:`_id_part`) hashed: verify holds one per stored blob, and the rows
    of a blob and the id its bytes carry compare by it."""
    return xxhash.xxh3_64_intdigest(id_part)


def _key_name(key: bytes) -> int:
    """:func:`_name_of` the id part of an ``objects`` key."""
    return _name_of(key[len(_ANY_PID) :])


def _id_part(object_id: str) -> bytes:
    """The id part of the ``objects`` keys an object is stored under."""
    return object_key(_ANY_PID, object_id)[len(_ANY_PID) :]


def _name_rows(named: dict[bytes, int], digest: bytes, key: bytes) -> None:
    """Note the id an object row of ``digest`` is under; -1 once its rows disagree."""
    if named.setdefault(digest, _key_name(key)) != _key_name(key):
        named[digest] = -1


class Checks(Environment):
    """verify and repair_rows of the LMDB backend."""

    def repair_rows(self) -> int:
        """Rewrite the rows derived from objects' bytes where they disagree with them: the
        closure table from the objects' ``__closure`` (whole, so a damaged page of it goes
        too); each object row under another id than its object's moved back to that id
        (dropped when the id is taken); the digest and location of object rows and index
        entries set from the frame that passes its checksum. Objects whose bytes are
        damaged, and rows of the wrong length, are left as they are; reference counts are
        :meth:`recount`'s. Return how many rows changed. One write transaction;
        StoreCorrupt, with nothing changed, when another table's keys are out of order (a
        damaged B-tree page, which rewriting rows would spread)."""

        def run(txn: Any) -> int:
            disorder = self._disorder(txn)
            fatal = [problem for name, problem in disorder.items() if name != "closures"]
            if fatal:
                raise errors.StoreCorrupt(
                    f"{self.path}: {fatal[0]}; repair cannot rewrite rows there safely: "
                    "restore the store from a copy (a cache: move it aside, receive again)"
                )
            named: dict[bytes, int] = {}
            row_at: dict[bytes, bytes] = {}  # digest -> where an object row of it says it is
            for key, row in txn.cursor(self._objects):
                if len(row) == ROW.size:
                    digest = row[:DIGEST_SIZE]
                    row_at.setdefault(digest, row[DIGEST_SIZE:])
                    _name_rows(named, digest, key)
            renamed: dict[bytes, bytes] = {}  # digest -> the id part its object rows need
            located: dict[bytes, bytes] = {}  # digest -> where its frame was read whole
            relocated: list[tuple[bytes, bytes]] = []  # index entries to point there
            rekeyed: list[tuple[bytes, bytes, bytes]] = []  # entries to move to their digest
            kept: dict[bytes, bytes] = {}  # place -> a closure row that stays as it is

            def keep(place: bytes) -> None:
                """Keep the closure row at ``place``, if any: no object's bytes say it is
                wrong."""
                if place not in kept and (left := txn.get(place, db=self._closures)) is not None:
                    kept[place] = left

            fresh: dict[bytes, codec.Record] = {}  # place -> the object its new row is for
            for digest, row in txn.cursor(self._index):
                if len(digest) != DIGEST_SIZE or len(row) != INDEX_ROW:
                    continue
                found = self._whole_frame(txn, digest, (row[REF.size :], row_at.get(digest)))
                if found is None:  # an entry under a damaged key: its frame names its digest
                    true = self._frame_digest(txn, row[REF.size :])
                    if (
                        true is not None
                        and true in row_at
                        and txn.get(true, db=self._index) is None
                    ):
                        rekeyed.append((bytes(digest), true, bytes(row)))
                        digest, found = true, self._whole_frame(txn, true, [row[REF.size :]])
                try:
                    if found is None:
                        raise errors.CorruptObject(digest.hex(), "no location reads it")
                    object_id, closure = codec.stored_head(found[1])
                except (errors.CorruptObject, errors.InvalidObject):
                    keep(row[REF.size : REF.size + PLACE])  # nothing to derive rows from
                    continue
                located[digest] = found[0]
                if found[0] != row[REF.size :]:
                    relocated.append((bytes(digest), row[: REF.size] + found[0]))
                place = found[0][:PLACE]
                try:
                    parts = self._closure_at(txn, place, digest, object_id)
                    right = parts == (closure and closure_columns(closure))
                except errors.CorruptObject:
                    parts, right = None, False
                if right and parts is not None:
                    kept[place] = txn.get(place, db=self._closures)
                elif not right and closure:
                    fresh[place] = codec.Record(object_id, b"", digest, closure)
                name = _id_part(object_id)
                hashed = _name_of(name)
                if named.get(digest, hashed) != hashed:
                    renamed[digest] = name
            # rows at places the object rows of unread blobs name stay: no frame says they
            # are wrong (the index entry's location may be the damaged one)
            for row in txn.cursor(self._objects).iternext(keys=False, values=True):
                if len(row) == ROW.size and row[:DIGEST_SIZE] not in located:
                    keep(row[DIGEST_SIZE : DIGEST_SIZE + PLACE])
            before = set(txn.cursor(self._closures).iternext(keys=True, values=False))
            gone = before - kept.keys() - fresh.keys()  # rows where no object, or none with a
            changed = len(fresh) + len(gone)  # __closure, is: the rebuild leaves them out
            if changed or "closures" in disorder:
                values = kept | {
                    place: value
                    for place, value in zip(
                        fresh,
                        encode_closures(list(fresh.values()), self._codec, 0).values(),
                        strict=True,
                    )
                }
                txn.drop(self._closures, delete=False)
                txn.cursor(self._closures).putmulti(sorted(values.items()))
            at_location = {location: digest for digest, location in located.items()}
            fixes: list[tuple[bytes, bytes]] = []  # an object row's key, the digest it needs
            for key, row in txn.cursor(self._objects):
                if len(row) != ROW.size:
                    continue
                digest = row[:DIGEST_SIZE]
                if digest not in located and txn.get(digest, db=self._index) is None:
                    # a digest no entry has: the frame its row places may name the right one
                    true = at_location.get(row[DIGEST_SIZE:])
                    if true is None or self._frame_digest(txn, row[DIGEST_SIZE:]) != true:
                        continue
                    digest = true
                elif digest not in located:
                    continue  # its bytes are damaged: nothing to set its rows from
                name = key[len(_ANY_PID) :]
                if (
                    row[:DIGEST_SIZE] != digest
                    or renamed.get(digest, name) != name
                    or (row[DIGEST_SIZE:] != located[digest])
                ):
                    fixes.append((bytes(key), digest))
            for old_digest, digest, value in rekeyed:
                txn.delete(old_digest, db=self._index)
                txn.put(digest, value, db=self._index)
            for digest, value in relocated:
                txn.put(digest, value, db=self._index)
            for key, digest in fixes:
                mended = digest + located[digest]
                right_key = key[: len(_ANY_PID)] + renamed.get(digest, key[len(_ANY_PID) :])
                if right_key == key:
                    txn.put(key, mended, db=self._objects)
                else:
                    txn.delete(key, db=self._objects)
                    txn.put(right_key, mended, db=self._objects, overwrite=False)
            return changed + len(rekeyed) + len(relocated) + len(fixes)

        done: int = self._write_retrying(run)
        return done

    def _whole_frame(
        self, txn: Any, digest: bytes, locations: Iterable[bytes | None]
    ) -> tuple[bytes, bytes] | None:
        """The first of ``locations`` (its index entry's, an object row's) whose frame passes
        ``digest``'s checksum, and its bytes; None when neither does."""
        for location in dict.fromkeys(locations):  # each once: they are often the same
            if location is None:
                continue
            try:
                return bytes(location), self._read_frame(txn, digest, location, 0, None)
            except errors.CorruptObject:
                continue
        return None

    def _frame_digest(self, txn: Any, location: bytes) -> bytes | None:
        """The digest of the bytes the frame at ``location`` decodes to, unchecked (None when
        no frame is there or it does not decode): what a damaged digest stood for."""
        try:
            return digest_of(self._decompressed(txn, self._frame_at(txn, b"", location, 0, None)))
        except (errors.CorruptObject, CodecError):
            return None

    def _disorder(self, txn: Any) -> dict[str, str]:
        """For each table whose keys are not in strictly increasing order, where: a damaged
        B-tree page, near which lookups miss rows a cursor still walks."""
        found: dict[str, str] = {}
        for name in ("objects", "index", "closures", "packs", "packrefs", "projects"):
            before: bytes | None = None
            for key in txn.cursor(getattr(self, f"_{name}")).iternext(keys=True, values=False):
                if before is not None and key <= before:
                    found[name] = (
                        f"the {name} table's key {bytes(key)[:40]!r} follows "
                        f"{bytes(before)[:40]!r}: out of order, a damaged B-tree page"
                    )
                    break
                before = key
        return found

    def verify(self, progress: Callable[[int], None] | None = None) -> VerifyReport:
        report = VerifyReport()
        try:
            return self._verify(report, progress)
        except (errors.StoreCorrupt, *DAMAGED) as exc:  # a table's pages: no walking on
            report.problems.append(f"stopped: {exc}")
            return report

    def _verify(self, report: VerifyReport, progress: Callable[[int], None] | None) -> VerifyReport:
        with self._read() as txn:
            disorder = self._disorder(txn)
        for name, problem in disorder.items():
            if name == "closures":  # derived from the objects: repair_rows rebuilds it
                report.disagreeing += 1
            report.problems.append(f"{problem} (lookups near it can miss rows)")
        referenced: dict[bytes, int] = {}
        misplaced: set[bytes] = set()
        locations: dict[bytes, bytes] = {}
        places: set[bytes] = set()  # where object and index rows place frames (and closures)
        whole: set[bytes] = set()  # blobs whose frame passed its checksum

        # each digest's rows name one id, the one its bytes carry: hashed, they are checked
        # against it once the bytes are read (a flipped bit in a key moves an object)
        named: dict[bytes, int] = {}
        wrong_names: dict[bytes, tuple[int, str]] = {}  # digest -> (hashed id, id) expected

        def visit_object(key: bytes, row: bytes) -> None:
            if len(row) != ROW.size:
                report.problems.append(f"object row {key!r}: {len(row)} bytes, not {ROW.size}")
                return
            digest = row[:DIGEST_SIZE]
            referenced[digest] = referenced.get(digest, 0) + 1
            places.add(row[DIGEST_SIZE : DIGEST_SIZE + PLACE])
            locations.setdefault(digest, row[DIGEST_SIZE:])
            if locations[digest] != row[DIGEST_SIZE:]:
                misplaced.add(digest)
            _name_rows(named, digest, key)  # rows that disagree are named below

        self._scan(self._objects, visit_object)
        report.objects_checked = sum(referenced.values())
        refcounts: dict[bytes, int] = {}
        per_pack: dict[bytes, int] = {}

        def check_entry(txn: Any, digest: bytes, row: bytes) -> None:
            report.blobs_checked += 1
            if len(digest) != DIGEST_SIZE or len(row) != INDEX_ROW:
                report.problems.append(
                    f"index row {digest.hex()}: {len(row)} bytes, not {INDEX_ROW}"
                )
                return
            refcounts[digest] = REF.unpack_from(row)[0]
            pack_key = row[REF.size : REF.size + 8]
            per_pack[pack_key] = per_pack.get(pack_key, 0) + 1
            if digest in locations and locations[digest] != row[REF.size :]:
                misplaced.add(digest)
            places.add(row[REF.size : REF.size + PLACE])
            try:
                place = row[REF.size : REF.size + PLACE]
                try:
                    data = self._read_frame(txn, digest, row, REF.size, None)
                except errors.CorruptObject:
                    elsewhere = locations.get(digest)
                    found = None
                    if elsewhere != row[REF.size :]:  # not the place just read
                        found = self._whole_frame(txn, digest, [elsewhere])
                    if found is None:
                        raise
                    # its object rows have it right (counted among the misplaced below):
                    place, data = found[0][:PLACE], found[1]  # repair_rows re-points the entry
                    report.problems.append(
                        f"blob {digest.hex()}: its index entry's location does not read it, "
                        "its object rows' does"
                    )
                whole.add(digest)
                object_id, closure = codec.stored_head(data)
            except errors.CorruptObject as exc:
                report.problems.append(str(exc))
                return
            except errors.InvalidObject as exc:
                report.problems.append(f"blob {digest.hex()}: not an object as stored: {exc}")
                return
            name = _name_of(_id_part(object_id))
            if named.get(digest, name) != name:
                wrong_names[digest] = (name, object_id)
            try:
                parts = self._closure_at(txn, place, digest, object_id)
            except errors.CorruptObject as exc:  # its object is whole: repair_rows rewrites it
                report.disagreeing += 1
                report.problems.append(str(exc))
                return
            if parts != (closure and closure_columns(closure)):
                if parts is None:
                    wrong = "its __closure has no closure row"
                elif closure is None:
                    wrong = "a closure row, where it has no __closure"
                else:
                    wrong = "its closure row disagrees with its __closure"
                report.disagreeing += 1
                report.problems.append(
                    f"object {object_id!r} (blob {digest.hex()}): {wrong} "
                    "(children streams and closures read the row)"
                )

        self._scan(self._index, check_entry, with_txn=True, progress=progress)
        if wrong_names:
            self._name_moved_rows(wrong_names, report)
        with self._read() as txn:
            strays = [
                bytes(place)
                for place in txn.cursor(self._closures).iternext(keys=True, values=False)
                if place not in places
            ]
        for place in strays:
            report.disagreeing += 1
            report.problems.append(f"closure row {place!r}: no object is stored there")
        for digest in sorted(misplaced):
            report.disagreeing += digest in whole  # one of the locations reads it
            report.problems.append(f"blob {digest.hex()}: object rows disagree on its location")
        for digest, count in referenced.items():
            if digest not in refcounts:
                report.problems.append(f"blob {digest.hex()}: missing, {count} objects use it")
            elif refcounts[digest] != count:
                report.miscounted += 1
                report.problems.append(
                    f"blob {digest.hex()}: refcount {refcounts[digest]} but {count} objects"
                )
        for digest in refcounts.keys() - referenced.keys():
            report.miscounted += 1
            report.problems.append(f"blob {digest.hex()}: stored but no object uses it")
        live: dict[bytes, int] = {}

        def count_live(pack_key: bytes, row: bytes) -> None:
            if len(pack_key) != U64.size or len(row) != U32.size:
                report.problems.append(f"pack count row {pack_key!r}: damaged")
                return
            live[pack_key] = U32.unpack(row)[0]

        self._scan(self._packrefs, count_live)
        for pack_key in sorted(live.keys() | per_pack.keys()):
            if live.get(pack_key) != per_pack.get(pack_key):
                number = U64.unpack(pack_key)[0]
                report.problems.append(
                    f"pack {number}: counted {live.get(pack_key)} live entries, "
                    f"found {per_pack.get(pack_key, 0)}"
                )
        txn = self._begin_read(buffers=True)  # keys only: no pack is copied out
        try:
            stored = [bytes(k) for k in txn.cursor(self._packs).iternext(keys=True, values=False)]
        finally:
            self._end_read(txn)
        for pack_key in stored:
            if len(pack_key) != U64.size:
                report.problems.append(f"pack row {pack_key!r}: damaged key")
            elif pack_key not in per_pack:
                number = U64.unpack(pack_key)[0]
                report.problems.append(f"pack {number}: stored but no object is in it")
        return report

    def _name_moved_rows(
        self, expected: dict[bytes, tuple[int, str]], report: VerifyReport
    ) -> None:
        """Report each object row under another id than the one its object carries."""

        def visit(key: bytes, row: bytes) -> None:
            wanted = expected.get(row[:DIGEST_SIZE])
            if wanted is not None and _key_name(key) != wanted[0]:
                report.disagreeing += 1
                report.problems.append(
                    f"object row {key!r}: under another id than its object's {wanted[1]!r}"
                )

        self._scan(self._objects, visit)

    def _scan(
        self,
        db: Any,
        fn: Any,
        *,
        with_txn: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Visit every row of ``db`` in short read transactions; ``with_txn`` hands ``fn`` a
        transaction on the same snapshot whose values are views (a pack read is not copied).
        ``progress`` is told how many rows each transaction visited."""
        after: bytes | None = None
        visited = 0
        while True:
            with self._read() as txn:
                views = self._views_of(txn) if with_txn else None
                started = visited
                try:
                    if visited > txn.stat(db)["entries"]:  # keys out of order sent it back
                        return
                    cur = txn.cursor(db)
                    if not (cur.set_range(after) if after is not None else cur.first()):
                        return
                    if after is not None and cur.key() == after and not cur.next():
                        return
                    for rows, (key, value) in enumerate(cur, 1):
                        if with_txn:
                            fn(views or txn, key, value)
                        else:
                            fn(key, value)
                        after = key
                        visited += 1
                        if rows >= CHUNK * 8:
                            break
                    else:
                        return
                finally:
                    if views is not None:
                        views.abort()
                    if progress is not None and visited > started:
                        progress(visited - started)
