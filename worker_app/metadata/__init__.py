# mutagen's UTF-16 string decoding, byte by byte, was the largest single cost of reading ID3v2.3 tags: a faster
# equivalent is installed once for every process that reads audio (see fastpaths.py).
from worker_app.metadata import fastpaths as _fastpaths

_fastpaths.install()
