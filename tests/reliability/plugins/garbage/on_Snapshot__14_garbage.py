#!/usr/bin/env python3
# Hostile test hook: valid records mixed with text, invalid UTF-8, JSON that is not an
# object, half JSON lines, and a last line cut in the middle.
import sys

out = sys.stdout.buffer
out.write(b'{"type":"Tag","name":"garbage-ok"}\n')
out.write(b"progress 10% \xff\xfe\xfa not utf-8\n")
out.write(b'{"type":"ArchiveRes\n')
out.write(b"[1, 2, 3]\n")
out.write(b"null\n")
out.write(b'\xc3\x28{"type":"Tag","name":"broken-prefix"}\n')
out.write(b'{"type":"ArchiveResult","status":"succeeded","output_str":"garbage/x"}\n')
out.write(b'{"type":"Tag","na')
out.flush()
