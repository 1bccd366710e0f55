"""DIMSE messages reassembled from the PDVs of the P-DATA-TF PDUs a requestor receives.

Each PDV carries a fragment of a command set or of a data set, with the Message Control Header
saying which and whether it is the last (PS3.8 9.3.5.1, Annex E.2). Sizes are bounded: a command
set over 64 KiB, or a data set over the requestor's `max_dataset`, is a protocol error.
"""

from __future__ import annotations

import struct

from . import dimse, pdu
from .requestor_types import Message

MAX_COMMAND = 1 << 16


class MessageAssembler:
    """Feeds P-DATA-TF bodies in order; gives each DIMSE message once it is complete."""

    def __init__(self, max_dataset: int) -> None:
        self.max_dataset = max_dataset
        self._command = bytearray()
        self._dataset = bytearray()
        self._pending_command: dimse.Command | None = None

    def feed(self, body: bytes) -> Message | None:
        """The message that this PDU completes, if any; raises `pdu.ProtocolError`."""
        pos, done = 0, None
        while pos < len(body):
            if pos + 6 > len(body):
                raise pdu.ProtocolError("PDV header runs past the end of its P-DATA-TF")
            length, _, control = struct.unpack_from(">IBB", body, pos)
            if length < 2 or pos + 4 + length > len(body):
                raise pdu.ProtocolError(f"PDV length {length} does not fit its P-DATA-TF")
            fragment = body[pos + 6 : pos + 4 + length]
            pos += 4 + length
            if control & 1:
                done = self._command_fragment(fragment, last=bool(control & 2)) or done
            else:
                done = self._dataset_fragment(fragment, last=bool(control & 2)) or done
        return done

    def _command_fragment(self, fragment: bytes, last: bool) -> Message | None:
        self._command += fragment
        if len(self._command) > MAX_COMMAND:
            raise pdu.ProtocolError("a DIMSE command set over 64 KiB")
        if not last:
            return None
        command = dimse.decode_command(bytes(self._command))
        self._command.clear()
        if command.has_data_set:
            self._pending_command = command
            return None
        return Message(command, None)

    def _dataset_fragment(self, fragment: bytes, last: bool) -> Message | None:
        self._dataset += fragment
        if len(self._dataset) > self.max_dataset:
            raise pdu.ProtocolError(f"a response data set over {self.max_dataset} bytes")
        if not last:
            return None
        if self._pending_command is None:
            raise pdu.ProtocolError("a data set without its command set")
        done = Message(self._pending_command, bytes(self._dataset))
        self._pending_command = None
        self._dataset.clear()
        return done
