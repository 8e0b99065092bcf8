"""An append-only ``.npy`` file of 128-d face descriptors that stays loadable after a kill.

The file is a standard NumPy v1.0 array of shape (N, 128), float32. Its header is padded
to a fixed 128 bytes, so appending a row rewrites the shape in place without moving the
data. Rows are written before the header grows and before the manifest names them, so an
interrupted run can leave extra rows (cut on the next run) but never a missing one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from facegan.errors import UserError

log = logging.getLogger(__name__)

DESCRIPTOR_SIZE = 128
_MAGIC = b"\x93NUMPY\x01\x00"
# Magic (8 bytes) + header length (2 bytes) + header text; NumPy aligns data to 64 bytes.
_HEADER_BYTES = 128
_ROW_BYTES = DESCRIPTOR_SIZE * 4


def _header(rows: int) -> bytes:
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {DESCRIPTOR_SIZE}), }}"
    text_bytes = _HEADER_BYTES - len(_MAGIC) - 2
    encoded = text.ljust(text_bytes - 1).encode("latin1") + b"\n"
    return _MAGIC + text_bytes.to_bytes(2, "little") + encoded


class DescriptorStore:
    """Rows of ``descriptors.npy``; row ``i`` belongs to the record with ``descriptor_row: i``.

    ``rows`` is the number of rows the manifest refers to. Rows past it come from a run
    that was killed before writing their records, and are dropped.
    """

    def __init__(self, path: Path, rows: int):
        self.path = Path(path)
        self.rows = rows
        if not self.path.exists():
            if rows:
                raise UserError(
                    f"{self.path} is missing but the manifest refers to {rows} descriptors; "
                    "restore the file or prepare into a new output folder"
                )
            self.path.write_bytes(_header(0))
            return
        stored = (self.path.stat().st_size - _HEADER_BYTES) // _ROW_BYTES
        if stored < rows:
            raise UserError(
                f"{self.path} contains {stored} descriptors but the manifest refers to {rows}; "
                "prepare into a new output folder"
            )
        if stored > rows:
            log.info("dropping %d descriptors without a manifest record", stored - rows)
        with open(self.path, "r+b") as handle:
            handle.truncate(_HEADER_BYTES + rows * _ROW_BYTES)
            handle.write(_header(rows))

    def append(self, descriptor: np.ndarray) -> int:
        """Write one descriptor and return its row index."""
        row = np.asarray(descriptor, dtype="<f4").reshape(DESCRIPTOR_SIZE)
        with open(self.path, "r+b") as handle:
            handle.seek(_HEADER_BYTES + self.rows * _ROW_BYTES)
            handle.write(row.tobytes())
            handle.seek(0)
            handle.write(_header(self.rows + 1))
        self.rows += 1
        return self.rows - 1
