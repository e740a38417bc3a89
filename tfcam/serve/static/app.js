// tfcam explorer: the gallery of a run's images and the image view. Plain ES module, relative
// URLs (the same page works at / and inside TensorBoard). Everything a user named (runs, classes,
// files) reaches the page as text nodes, never as HTML.

const $ = (id) => document.getElementById(id);
const state = {
  runs: [], run: null, offset: 0, limit: 60, total: 0, images: [], sel: -1,
  methods: [], layers: [], defaultLayer: null, current: null, pair: null,
};

async function api(path, params = {}, init) {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== ""));
  const url = `api/${path}${q.toString() ? "?" + q : ""}`;
  const r = await fetch(url, init);
  const type = r.headers.get("content-type") || "";
  const body = type.includes("json") ? await r.json() : await r.blob();
  if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
  return body;
}

function url(path, params) {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== ""));
  return `api/${path}?${q}`;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function options(select, items, selected) {
  select.replaceChildren(...items.map(([value, text]) => {
    const o = el("option", { value }, text);
    if (value === selected) o.selected = true;
    return o;
  }));
}

function say(text) { $("message").textContent = text || ""; }
function status(text) { $("status").textContent = text || ""; }

// Runs and gallery ----------------------------------------------------------------------------
async function loadRuns() {
  const { runs } = await api("runs");
  state.runs = runs;
  options($("run"), runs.map((r) => [r.name, r.name]), runs[0] && runs[0].name);
  options($("other"), [["", "(none)"], ...runs.map((r) => [r.name, r.name])], "");
  $("otherbox").hidden = runs.length < 2;
  await chooseRun(runs[0] && runs[0].name);
}

async function chooseRun(name) {
  state.run = state.runs.find((r) => r.name === name);
  if (!state.run) { say("No run to show"); return; }
  const splits = Object.keys(state.run.splits);
  options($("split"), splits.map((s) => [s, `${s} (${state.run.splits[s]})`]), splits.includes("val") ? "val" : splits[0]);
  options($("true"), [["", "any"], ...state.run.classes.map((c) => [c, c])], "");
  const m = await api("methods", { run: name });
  state.methods = m.methods; state.layers = m.layers; state.defaultLayer = m.default;
  state.evaluation = m.evaluate_cams;
  options($("method"), m.methods.map((x) => [x.name, x.name]), "gradcam");
  for (const o of $("method").options) o.title = m.methods.find((x) => x.name === o.value).description;
  options($("layer"), m.layers.map((l) => [l, l === m.default ? `${l} (default)` : l]), m.default);
  const epochs = state.run.epochs || [];
  $("epochbox").hidden = epochs.length === 0;
  $("epoch").max = String(Math.max(epochs.length, 0));
  $("epoch").value = String(epochs.length);
  state.offset = 0;
  await loadGallery();
}

function galleryParams() {
  return {
    run: state.run.name, split: $("split").value, filter: $("filter").value, true: $("true").value,
    predicted: state.predicted || "", sort: $("sort").value, min_p: $("min_p").value, max_p: $("max_p").value,
    offset: state.offset, limit: state.limit,
  };
}

async function loadGallery() {
  say("");
  let page;
  try { page = await api("images", galleryParams()); } catch (e) { say(e.message); return; }
  state.images = page.images; state.total = page.total; state.sel = -1;
  const g = $("gallery");
  g.replaceChildren(...page.images.map((im, i) => {
    const wrong = im.true !== null && im.true !== im.predicted;
    const card = el("button", { class: "card", "data-id": im.id, title: im.path || im.id, onclick: () => open(i) },
      el("img", { src: url("photo", { run: state.run.name, image: im.id, size: "thumb" }), alt: im.path || im.id, loading: "lazy" }),
      el("span", { class: "cap" }, el("span", { class: wrong ? "wrong" : "right" }, im.true ?? "?"),
        " → ", im.predicted ?? "?", ` ${(im.probability ?? 0).toFixed(2)}`));
    return card;
  }));
  const c = $("confusions");
  c.replaceChildren(...page.confusions.map((x) => {
    const on = $("true").value === x.true && state.predicted === x.predicted;
    return el("button", { class: on ? "on" : "", onclick: () => confusion(x, on) }, `${x.true} → ${x.predicted} (${x.count})`);
  }));
  const from = page.total ? state.offset + 1 : 0;
  $("count").textContent = `${from}–${state.offset + page.images.length} of ${page.total}`;
  $("prev").disabled = state.offset === 0;
  $("next").disabled = state.offset + state.limit >= page.total;
}

function confusion(x, on) {
  state.predicted = on ? "" : x.predicted;
  $("true").value = on ? "" : x.true;
  $("filter").value = on ? "all" : "misclassified";
  state.offset = 0;
  loadGallery();
}

function select(i) {
  const cards = [...document.querySelectorAll(".card")];
  if (!cards.length) return;
  state.sel = Math.max(0, Math.min(cards.length - 1, i));
  cards.forEach((c, j) => c.classList.toggle("sel", j === state.sel));
  cards[state.sel].focus();
}

// Image view ----------------------------------------------------------------------------------
function open(i) {
  select(i);
  const im = state.images[i];
  state.current = im;
  showImage();
}

function showImage() {
  const im = state.current;
  const classes = state.run.classes;
  const targets = [["", `predicted (${im.predicted})`], ...(im.true ? [[im.true, `true (${im.true})`]] : []),
    ...classes.map((c) => [c, c])];
  options($("target"), targets, "");  // a new image starts at its predicted class
  $("title").textContent = im.path || im.id;
  if (!$("view").open) { $("view").showModal(); $("view").focus(); }
  render();
}

function heatmapParams(run, method, target) {
  const p = { run, image: state.current.id, method, target, score: $("score").value, style: "map" };
  if (run !== state.run.name) {  // the same file, as the other run lists it, at its own default layer
    p.of = state.run.name;
    return p;
  }
  if (state.layers.length && $("layer").value !== state.defaultLayer) p.layer = $("layer").value;
  const epochs = state.run.epochs || [];
  const e = Number($("epoch").value);
  if (epochs.length && e < epochs.length) p.epoch = epochs[e];
  return p;
}

async function render() {
  const im = state.current;
  const method = $("method").value;
  const target = $("target").value;
  let panels = [[state.run.name, method, target]];
  if ($("compare").checked) {
    // The chosen method beside three others, for the same class; then the chosen method for the
    // other class that matters (the true one when the prediction is wrong, else the predicted).
    const others = ["gradcam", "layercam", "scorecam", "integrated_gradients"]
      .filter((m) => m !== method && state.methods.some((x) => x.name === m)).slice(0, 3);
    panels = [method, ...others].map((m) => [state.run.name, m, target]);
    const shown = target || im.predicted;
    const other = im.true && im.true !== shown ? im.true : (shown !== im.predicted ? im.predicted : null);
    if (other) panels.push([state.run.name, method, other]);
  }
  if ($("other").value && $("other").value !== state.run.name && !im.id.startsWith("upload-")) {
    panels.push([$("other").value, method, target]);
  }
  const opacity = $("opacity").value;
  $("panels").replaceChildren(...panels.map(([run, m, t]) => {
    const hm = el("img", { class: "heat", alt: `${m} heatmap`, style: `opacity:${opacity}` });
    const label = el("div", { class: "label" }, `${run === state.run.name ? "" : run + " · "}${m} · ${t || "predicted"}`);
    hm.addEventListener("error", async () => {
      try { await api("heatmap", heatmapParams(run, m, t)); } catch (e) { label.textContent = e.message; }
    });
    hm.src = url("heatmap", heatmapParams(run, m, t));
    const photo = el("img", { src: url("photo", { run: state.run.name, image: im.id }), alt: im.path || im.id });
    const stack = el("div", { class: "stack" }, photo, hm);
    // The stack takes the photo's aspect, so the map (drawn in the photo's frame) and the box sit on it exactly.
    photo.addEventListener("load", () => { stack.style.aspectRatio = `${photo.naturalWidth} / ${photo.naturalHeight}`; });
    return el("div", { class: "panel" }, stack, label);
  }));
  status("computing…");
  try {
    const j = await api("heatmap", { ...heatmapParams(state.run.name, method, target), format: "json" });
    drawProbs(j.probabilities, j.target);
    drawBox(j.box);
    const q = j.quality ? ` · energy in the box ${j.quality.energy_in_box.toFixed(2)}, pointing ${j.quality.pointing_hit ? "hit" : "miss"}` : "";
    status(`${method} for ${j.target}: score ${j.score.toFixed(3)}${j.layer ? " at " + j.layer : ""}${q}${j.constant ? " (constant map: nothing supports the class there)" : ""}`);
    drawEvaluation(method);
  } catch (e) { status(""); say(e.message); }
}

function drawProbs(probs, target) {
  const rows = Object.entries(probs).sort((a, b) => b[1] - a[1]).slice(0, 10);
  $("probs").replaceChildren(...rows.flatMap(([c, p]) => [
    el("span", {}, c === target ? `${c} ◀` : c),
    el("div", { class: "bar-bg" }, el("div", { class: "bar-fg", style: `width:${(100 * p).toFixed(1)}%` })),
    el("span", {}, p.toFixed(3)),
  ]));
}

function drawBox(box) {
  for (const b of document.querySelectorAll(".box")) b.remove();
  if (!box) return;
  const [x0, y0, x1, y1] = box.fraction;
  for (const stack of document.querySelectorAll("#panels .stack")) {
    stack.append(el("div", { class: "box", title: "the target's box",
      style: `left:${100 * x0}%;top:${100 * y0}%;width:${100 * (x1 - x0)}%;height:${100 * (y1 - y0)}%` }));
  }
}

function drawEvaluation(method) {
  const ev = state.evaluation;
  const row = ev && ev.methods[method];
  const box = $("evaluation");
  if (!row) { box.replaceChildren(); return; }
  const cells = Object.keys(ev.columns).filter((c) => c in row && row[c] !== null && c !== "seconds");
  box.replaceChildren(
    el("p", {}, `tfcam evaluate-cams on ${ev.n} ${ev.split} images at ${ev.layer}: ${method}`),
    el("table", {}, el("tr", {}, ...cells.map((c) => el("th", { title: `${ev.columns[c]} is better` }, c.replaceAll("_", " ")))),
      el("tr", {}, ...cells.map((c) => el("td", {}, typeof row[c] === "number" ? row[c].toFixed(3) : String(row[c]))))));
}

function cycle(select, step) {
  const n = select.options.length;
  if (!n) return;
  select.selectedIndex = (select.selectedIndex + step + n) % n;
  render();
}

// Uploads -------------------------------------------------------------------------------------
async function upload(file) {
  if (!file) return;
  say("");
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const r = await api("upload", { run: state.run.name }, { method: "POST", body: form });
    state.current = { id: r.id, path: file.name, true: null, predicted: r.predicted, probability: r.probability };
    showImage();
  } catch (e) { say(e.message); }
}

// Wiring --------------------------------------------------------------------------------------
function wire() {
  $("run").addEventListener("change", (e) => chooseRun(e.target.value));
  for (const id of ["split", "filter", "true", "sort", "min_p", "max_p"]) {
    $(id).addEventListener("change", () => { state.offset = 0; if (id !== "filter") state.predicted = state.predicted && id === "true" ? "" : state.predicted; loadGallery(); });
  }
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); loadGallery(); });
  $("next").addEventListener("click", () => { state.offset += state.limit; loadGallery(); });
  for (const id of ["method", "target", "layer", "score", "compare", "other"]) $(id).addEventListener("change", render);
  $("epoch").addEventListener("input", () => {
    const epochs = state.run.epochs || []; const e = Number($("epoch").value);
    $("epochnum").textContent = e < epochs.length ? `epoch ${epochs[e]}` : "final";
  });
  $("epoch").addEventListener("change", render);
  $("opacity").addEventListener("input", () => { for (const h of document.querySelectorAll(".heat")) h.style.opacity = $("opacity").value; });
  $("close").addEventListener("click", () => $("view").close());
  $("file").addEventListener("change", (e) => upload(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); upload(e.dataTransfer.files[0]); });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
  document.addEventListener("keydown", (e) => {
    if (e.target.matches("input[type=number], input[type=text]") && e.key !== "Escape") return;
    if (e.target.matches("select") && e.key.startsWith("Arrow")) return;
    const viewing = $("view").open;
    if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      const step = e.key === "ArrowRight" ? 1 : -1;
      if (viewing && state.sel >= 0) { open(Math.max(0, Math.min(state.images.length - 1, state.sel + step))); }
      else select(state.sel + step);
      e.preventDefault();
    } else if (e.key === "Enter" && !viewing && state.sel >= 0) { open(state.sel); e.preventDefault(); }
    else if (viewing && "mMcClL".includes(e.key) && e.key.length === 1) {
      const select = { m: "method", c: "target", l: "layer" }[e.key.toLowerCase()];
      cycle($(select), e.key === e.key.toLowerCase() ? 1 : -1);
      e.preventDefault();
    }
  });
}

wire();
loadRuns().catch((e) => say(e.message));
