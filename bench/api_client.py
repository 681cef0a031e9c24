"""One OpenAI-client process for bench_api.py: reads `path<TAB>language` lines, sends each as a
transcription request, prints `{"sent", "latency", "job"}` as a JSON line. Separate processes,
as separate apps would be: twenty clients in one Python process would queue on its GIL."""

import json
import sys
import time

import openai

client = openai.OpenAI(base_url=sys.argv[1], api_key="none: loopback", max_retries=0, timeout=600)
for line in sys.stdin:
    path, language = line.rstrip("\n").split("\t")
    sent, start = time.time(), time.perf_counter()
    with open(path, "rb") as f:
        raw = client.audio.transcriptions.with_raw_response.create(model="whisper-1", file=f, language=language)
    latency = time.perf_counter() - start
    raw.parse()
    print(json.dumps({"sent": sent, "latency": latency, "job": raw.headers["x-murmur-job"],
                      "timing": raw.headers.get("server-timing", "")}), flush=True)
