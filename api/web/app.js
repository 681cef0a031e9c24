// murmur's page: upload, watch, read, listen, download. Plain DOM, no framework and no build step.
// Every text from the server or from a file's name is set with textContent, never parsed as HTML.
"use strict";

const LANGUAGES = ["en", "de", "es", "fr", "it", "pt", "nl", "pl", "ru", "uk", "sv", "da", "no", "fi", "cs", "tr",
  "ar", "he", "hi", "ja", "ko", "zh"];
const ENDED = new Set(["done", "failed"]);
const PAGE = 20;

const state = {
  key: sessionStorage.getItem("murmur.key"),
  names: JSON.parse(sessionStorage.getItem("murmur.names") || "{}"),  // job id -> the file's name, this tab only
  files: new Map(),  // job id -> File picked in this tab (played from memory)
  after: null,
  job: null,  // the job on show: {id, segments, speakers, stream, url}
};

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// ---- the API, with the key (if any) in the Authorization header: never a cookie, never the URL

class NeedsKey extends Error {}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.key) headers.set("Authorization", `Bearer ${state.key}`);
  const response = await fetch(path, { ...options, headers, credentials: "omit", cache: "no-store" });
  if (response.status === 401) {
    showKeyPanel(state.key ? "That key was not accepted." : "");
    throw new NeedsKey();
  }
  return response;
}

async function failure(response) {
  try {
    const body = await response.json();
    return (body.error && body.error.message) || response.statusText;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

// ---- panels

function show(...ids) {
  for (const panel of ["key-panel", "upload-panel", "jobs-panel", "job-panel"]) $(panel).hidden = !ids.includes(panel);
}

function showKeyPanel(message) {
  show("key-panel");
  $("key-error").textContent = message;
  $("key-input").focus();
}

async function route() {
  stopStream();
  const match = location.hash.match(/^#job\/([0-9a-f]{32})$/);
  try {
    if (match) await openJob(match[1]);
    else await openHome();
  } catch (error) {
    if (!(error instanceof NeedsKey)) throw error;
  }
}

async function openHome() {
  state.after = null;
  $("jobs-table").tBodies[0].replaceChildren();
  await loadJobs();
  show("upload-panel", "jobs-panel");
}

// ---- the key

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  state.key = $("key-input").value.trim();
  sessionStorage.setItem("murmur.key", state.key);
  $("key-input").value = "";
  await route();
});

// ---- uploads

for (const code of LANGUAGES) $("language").append(el("option", { value: code, text: code }));

$("diarize").addEventListener("change", () => { $("speakers").disabled = !$("diarize").checked; });
$("speakers").disabled = true;

const drop = $("drop-zone");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  send([...event.dataTransfer.files]);
});

$("upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  send([...$("file-input").files]);
});

async function send(files) {
  $("upload-error").textContent = "";
  if (!files.length) {
    $("upload-error").textContent = "Choose one or more audio or video files first.";
    return;
  }
  let first = null;
  for (const file of files) {
    const form = new FormData();
    form.append("file", file, file.name);
    if ($("language").value) form.append("language", $("language").value);
    if ($("translate").checked) form.append("task", "translate");
    form.append("word_timestamps", "true");
    if ($("prompt").value.trim()) form.append("prompt", $("prompt").value.trim());
    if ($("diarize").checked) {
      form.append("diarize", "true");
      if ($("speakers").value) form.append("speakers", $("speakers").value);
    }
    const item = el("li", { text: `${file.name}: sending…` });
    $("uploads").append(item);
    try {
      const response = await api("/v1/jobs", { method: "POST", body: form });
      if (!response.ok) {
        item.textContent = `${file.name}: ${await failure(response)}`;
        item.classList.add("error");
        continue;
      }
      const job = await response.json();
      state.files.set(job.id, file);
      state.names[job.id] = file.name;
      sessionStorage.setItem("murmur.names", JSON.stringify(state.names));
      item.replaceChildren(el("a", { href: `#job/${job.id}`, text: file.name }), ` queued`);
      first = first || job.id;
    } catch (error) {
      if (error instanceof NeedsKey) return;
      item.textContent = `${file.name}: not sent (${error.message})`;
      item.classList.add("error");
    }
  }
  $("file-input").value = "";
  if (first) location.hash = `#job/${first}`;
}

// ---- the job list

async function loadJobs() {
  const query = new URLSearchParams({ limit: PAGE });
  if (state.after) query.set("after", state.after);
  const response = await api(`/v1/jobs?${query}`);
  if (!response.ok) throw new Error(await failure(response));
  const page = await response.json();
  const rows = $("jobs-table").tBodies[0];
  for (const job of page.data) {
    rows.append(el("tr", {},
      el("td", {}, el("a", { href: `#job/${job.id}`, text: state.names[job.id] || job.id })),
      el("td", { text: job.status }),
      el("td", { text: job.duration == null ? "" : clock(job.duration) }),
      el("td", { text: job.language || "" }),
      el("td", { text: job.created_at ? new Date(job.created_at).toLocaleString() : "" })));
  }
  state.after = page.last_id;
  $("more-jobs").hidden = !page.has_more;
}

$("more-jobs").addEventListener("click", () => loadJobs());

// ---- a job's page

async function openJob(id) {
  const response = await api(`/v1/jobs/${id}`);
  if (!response.ok) {
    show("upload-panel", "jobs-panel");
    $("upload-error").textContent = await failure(response);
    return;
  }
  const job = await response.json();
  state.job = { id, segments: [], speakers: new Map(), stream: new AbortController(), url: null };
  $("job-title").textContent = state.names[id] || `Job ${id}`;
  $("transcript").replaceChildren();
  $("speaker-names").replaceChildren();
  $("speakers-panel").hidden = true;
  showState(job);
  show("job-panel");
  await loadMedia(id);
  follow(id, state.job.stream.signal);
}

function showState(job) {
  const total = job.chunks_total || 0;
  $("job-progress").max = Math.max(total, 1);
  $("job-progress").value = job.status === "done" ? Math.max(total, 1) : job.chunks_done;
  $("job-progress").hidden = ENDED.has(job.status);
  const parts = [job.status];
  if (total && !ENDED.has(job.status)) parts.push(`${job.chunks_done} of ${total} chunks decoded`);
  if (job.language) parts.push(`language ${job.language}`);
  if (job.duration != null) parts.push(clock(job.duration));
  if (job.error) parts.push(job.error);
  $("job-state").textContent = parts.join(" · ");
  for (const button of document.querySelectorAll(".downloads button")) button.disabled = job.status !== "done";
}

async function loadMedia(id) {
  for (const player of [$("player"), $("video-player")]) {
    player.removeAttribute("src");
    player.hidden = player.id === "video-player";
  }
  let blob = state.files.get(id);
  if (!blob) {
    const response = await api(`/v1/jobs/${id}/audio`);
    if (!response.ok) return;  // not an upload this server keeps (an s3:// source): the transcript alone
    blob = await response.blob();
  }
  const player = blob.type.startsWith("video/") ? $("video-player") : $("player");
  $("player").hidden = player !== $("player");
  $("video-player").hidden = player !== $("video-player");
  state.job.url = URL.createObjectURL(blob);
  player.src = state.job.url;
}

function activePlayer() {
  return $("video-player").hidden ? $("player") : $("video-player");
}

// the job's server-sent events, read through fetch so the key goes in a header (EventSource sends none)
async function follow(id, signal) {
  try {
    const response = await api(`/v1/jobs/${id}/events`, { signal });
    if (!response.ok) {
      $("job-state").textContent = await failure(response);
      return;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = (block.match(/^event: (.*)$/m) || [])[1];
        const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (event && data) received(event, JSON.parse(data));
      }
    }
  } catch (error) {
    if (error.name !== "AbortError" && !(error instanceof NeedsKey)) $("job-state").textContent = error.message;
  }
}

function received(event, data) {
  if (event === "segment") addSegment(data);
  else if (event === "deleted") $("job-state").textContent = "deleted";
  else if (data) showState(data);
}

function stopStream() {
  if (state.job) {
    state.job.stream.abort();
    if (state.job.url) URL.revokeObjectURL(state.job.url);
  }
  state.job = null;
}

function addSegment(segment) {
  const index = state.job.segments.push(segment) - 1;
  const button = el("button", { type: "button", class: "segment", "data-index": String(index),
    "aria-label": `${segment.speaker ? speakerName(segment.speaker) + ", " : ""}${clock(segment.start)}: ${segment.text}` });
  if (segment.speaker) {
    button.classList.add(`s${speakerIndex(segment.speaker) % 8}`);
    button.append(el("span", { class: "speaker", "data-speaker": segment.speaker, text: speakerName(segment.speaker) }));
  }
  button.append(el("span", { class: "time", text: clock(segment.start) }));
  if (segment.words && segment.words.length) {
    segment.words.forEach((word, i) => {
      if (i && !word.text.startsWith(" ")) button.append(" ");
      button.append(el("span", { class: "word", "data-start": String(word.start), text: word.text }));
    });
  } else {
    button.append(el("span", { class: "text", text: segment.text }));
  }
  $("transcript").append(el("li", {}, button));
}

$("transcript").addEventListener("click", (event) => {
  const word = event.target.closest(".word");
  const segment = event.target.closest(".segment");
  if (!segment) return;
  const start = word ? Number(word.dataset.start) : state.job.segments[Number(segment.dataset.index)].start;
  const player = activePlayer();
  player.currentTime = start;
  player.play().catch(() => {});  // a browser may refuse to play without a gesture it counts: the seek stands
});

for (const player of [$("player"), $("video-player")]) {
  player.addEventListener("timeupdate", () => {
    if (!state.job) return;
    const t = player.currentTime;
    const index = state.job.segments.findIndex((s) => s.start <= t && t < s.end);
    for (const node of document.querySelectorAll(".segment.current")) {
      node.classList.remove("current");
      node.removeAttribute("aria-current");
    }
    if (index >= 0) {
      const node = document.querySelector(`.segment[data-index="${index}"]`);
      node.classList.add("current");
      node.setAttribute("aria-current", "true");
    }
  });
}

// ---- speakers: colours, and names for the downloads

function speakerIndex(label) {
  if (!state.job.speakers.has(label)) {
    state.job.speakers.set(label, label);
    const input = el("input", { type: "text", value: label, maxlength: "40", "aria-label": `Name for ${label}`,
      "data-speaker": label });
    input.addEventListener("input", () => renameSpeaker(label, input.value));
    $("speaker-names").append(el("li", { class: `s${(state.job.speakers.size - 1) % 8}` }, input));
    $("speakers-panel").hidden = false;
  }
  return [...state.job.speakers.keys()].indexOf(label);
}

function speakerName(label) {
  return state.job.speakers.get(label) || label;
}

function renameSpeaker(label, name) {
  state.job.speakers.set(label, name.trim() || label);
  for (const node of document.querySelectorAll(`.speaker[data-speaker="${label}"]`)) node.textContent = speakerName(label);
}

// ---- downloads and delete

for (const button of document.querySelectorAll(".downloads button")) {
  button.addEventListener("click", async () => {
    const format = button.dataset.format;
    const query = new URLSearchParams({ format });
    for (const [label, name] of state.job.speakers) if (name !== label) query.append("rename", `${label}:${name}`);
    const response = await api(`/v1/jobs/${state.job.id}/transcript?${query}`);
    if (!response.ok) {
      $("job-state").textContent = await failure(response);
      return;
    }
    const url = URL.createObjectURL(await response.blob());
    const base = (state.names[state.job.id] || state.job.id).replace(/\.[^.]*$/, "");
    const link = el("a", { href: url, download: `${base}.${format}` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  });
}

$("delete-job").addEventListener("click", async () => {
  if (!confirm("Delete this job, its transcript and its recording?")) return;
  const response = await api(`/v1/jobs/${state.job.id}`, { method: "DELETE" });
  if (!response.ok) {
    $("job-state").textContent = await failure(response);
    return;
  }
  delete state.names[state.job.id];
  sessionStorage.setItem("murmur.names", JSON.stringify(state.names));
  location.hash = "";
});

function clock(seconds) {
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

window.addEventListener("hashchange", route);
route();
