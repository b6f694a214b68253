// vaelab explorer: one panel per run, talking to the JSON API of vaelab/explorer/app.py.
// Plain JS; its one library, onnxruntime-web, is served by vaelab (decoder.js): it must work
// offline. Where a run's decoder runs in the browser (decoder.js), moving over the map, the
// sliders, interpolation, the decoded grid and sampling decode here without a request;
// otherwise, and for uploads, the server decodes and images arrive as PNG data URLs. Either way
// images are at the data's own resolution and are drawn scaled up without smoothing. The map's
// colours come from colours.js, your own input's preparation from inputs.js. A
// label-conditional run (a cvae, an m2) gets a class picker: every decode, sample and
// interpolation carries the picked class, and your own input is shown decoded as every class.
// A completion model (a cvae trained with --observe) gets a note instead of the panel.
//
// The map: move (mouse, pen or touch) to decode the point under the pointer, click or tap to
// pin it, drag to pan, wheel or pinch-free +/- buttons to zoom. With the keyboard: arrows move
// the point (Shift: ten times further), Enter pins it, + and - zoom, 0 resets the view. The
// view's state is kept in the URL's #fragment, so a link opens the same view.
"use strict";

const MAX_SLIDERS = 16;
const CODE_EVERY_MS = 100; // the sliders' and readout's pace while the code moves (writeCodeSoon)
const INTERP_STEPS = 16;
const SAMPLE_N = 16;
const MAP_PAD = 24; // canvas pixels around the plotted bounds
const GRID_N = 12; // the decoded grid's cells per side
const KEY_STEP = 0.02; // of the view, per arrow key press
const ZOOM_STEP = 1.5;
const DRAG_PIXELS = 4; // a press that moves further is a pan, not a click

const panels = [];
window.vaelabPanels = panels; // for tests and tools
let sampleSeed = 0;
let runtimeFolder = null; // where onnxruntime-web is served from; null: not installed
// For tests and benchmarks: ms from each map pointer event to its image drawn, per panel.
window.vaelabLatencies = [];

// ---------------------------------------------------------------- helpers

// An offline page (`vaelab report --interactive`, vaelab/explorer/offline.py) carries the
// server's answers to its GET requests; anything else needs the server.
const offline = (() => {
  const node = document.getElementById("vaelab-offline");
  return node ? JSON.parse(node.textContent) : null;
})();

async function api(path, body) {
  if (offline) {
    const answer = body === undefined ? offline.get[path] : undefined;
    if (answer === undefined) throw new Error("this needs the server (vaelab serve)");
    return structuredClone(answer);
  }
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  let payload = null;
  try { payload = await response.json(); } catch { /* not JSON: reported below */ }
  if (!response.ok) {
    const detail = payload && payload.detail ? payload.detail : response.statusText;
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return payload;
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("could not read the image"));
    img.src = src;
  });
}

// Draw a data URL or a canvas into a rectangle of `canvas`, pixelated; the whole canvas when
// no rect.
async function drawImage(canvas, src, rect) {
  const img = typeof src === "string" ? await loadImage(src) : src;
  const ctx = canvas.getContext("2d");
  const [x, y, w, h] = rect || [0, 0, canvas.width, canvas.height];
  ctx.imageSmoothingEnabled = false;
  ctx.fillStyle = "#000";
  ctx.fillRect(x, y, w, h);
  ctx.drawImage(img, x, y, w, h);
}

async function drawGrid(canvas, sources, columns) {
  const rows = Math.ceil(sources.length / columns);
  const w = canvas.width / columns;
  const h = canvas.height / rows;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  await Promise.all(sources.map((src, i) =>
    drawImage(canvas, src, [(i % columns) * w, Math.floor(i / columns) * h, w, h])));
}

function setStatus(node, message, isError = false) {
  node.textContent = message;
  node.classList.toggle("error", isError);
}

function linked() {
  return panels.length > 1 && document.getElementById("link").checked;
}

// The other panels that are showing a map, when linked; `fn` is applied to each of them.
function forOthers(panel, fn) {
  if (linked()) panels.filter((p) => p !== panel && p.map && !p.unavailable).forEach(fn);
}

function sameLabels(a, b) {
  return Boolean(a.labels && b.labels) && JSON.stringify(a.labels) === JSON.stringify(b.labels);
}

// Whether two runs' codes are points of one space (the same number of dimensions, each with
// the meaning of its index): linked panels then go to the same latent point, not to the same
// place on their maps.
function sameSpace(a, b) {
  return a.latent_dim === b.latent_dim && !a.completion && !b.completion;
}

// The index of the row of `rows` (points or codes) nearest to `target`, by Euclidean distance.
function nearest(rows, target) {
  let best = 0;
  let bestDist = Infinity;
  for (let i = 0; i < rows.length; i++) {
    let d = 0;
    for (let k = 0; k < target.length; k++) d += (rows[i][k] - target[k]) ** 2;
    if (d < bestDist) [best, bestDist] = [i, d];
  }
  return best;
}

// ---------------------------------------------------------------- the view's state in the URL

const urlState = new URLSearchParams(window.location.hash.slice(1));
let urlTimer = null;

function numbers(text, count) {
  if (text === null) return null;
  const values = text.split(",").map(Number);
  return values.length === count && values.every(Number.isFinite) ? values : null;
}

// Write every panel's state into the URL's #fragment, at most every 200 ms.
function saveState() {
  if (urlTimer || offline) return; // an offline page lives in a frame of its own: no URL
  urlTimer = setTimeout(() => {
    urlTimer = null;
    const state = new URLSearchParams();
    if (panels.length > 1 && !linked()) state.set("link", "0");
    panels.forEach((p, k) => p.writeState(state, `${k}.`));
    history.replaceState(null, "", `#${state.toString()}`);
  }, 200);
}

// ---------------------------------------------------------------- a panel per run

class Panel {
  constructor(run, root) {
    this.run = run;
    this.root = root;
    this.q = (sel) => root.querySelector(sel);
    this.map = null;           // the /map response
    this.embedding = null;     // the /embedding response (t-SNE), fetched when first shown
    this.layout = "plane";     // what the map shows: "plane" (2-D space or PCA) or "tsne"
    this.view = null;          // the zoomed bounds {xmin, xmax, ymin, ymax}; null: the layout's
    this.colourBy = CLASS;     // what colours the map's points: CLASS or a factor's name
    this.mapImage = null;      // the scatter drawn once per view, offscreen
    this.grid = false;         // whether decoded images tile the map (the manifold)
    this.gridImage = null;     // those images, for the view they were decoded for
    this.gridVersion = 0;
    this.gridBusy = false;     // a grid decode is running
    this.gridWanted = false;   // and another view asked for one meanwhile
    this.cursor = null;        // [x, y] in the layout's coordinates
    this.pinned = null;
    this.ownCode = null;       // its code
    this.path = null;          // the interpolation response
    this.frame = 0;
    this.z = null;             // the code of the decoded image
    this.frameAsked = null;    // the animation frame that will show it on the map and sliders
    this.codeTimer = null;     // the sliders' next update (writeCodeSoon)
    this.codeWritten = -Infinity; // when they were last updated
    this.pending = null;       // the latest decode request waiting to be sent
    this.pendingEvent = null;  // the timestamp of the pointer event that asked for it
    this.decoder = null;       // the run's decoder in the browser (decoder.js), else null
    this.codes = new Map();    // test image index -> its code, fetched once
    this.sprite = null;        // the promise of the map's test images (mapImages)
    this.nearestShown = -1;    // the test image shown as the nearest
    this.busy = false;
    this.picking = [];         // test indices chosen in "click two points" mode
    this.label = null;         // the picked class of a conditional run, sent with every decode
    this.lastQuery = null;     // the latest decode body ({z}), redone for a new class
    this.seed = sampleSeed;    // the seed of the samples shown
    this.temperature = 1;      // of the samples
    this.sampleAsked = 0;      // draws asked for: only the latest is shown
    this.encodeAsked = 0;      // encodings asked for: only the latest is shown
    this.keyPoint = null;      // where the arrow keys last moved to (unsnapped, for t-SNE)
    this.source = null;        // your own input as given (an image URL or the drawing)
    this.unavailable = false;  // a completion model: no map, decoder or samples
    this.press = null;         // the pointer press on the map: {x, y, view, dragged}
  }

  status(message, isError = false) {
    setStatus(this.q(".panel-status"), message, isError);
  }

  async init(index) {
    this.index = index;
    this.describe();
    if (this.run.completion) {
      this.showUnavailable();
      return;
    }
    if (this.run.conditional) await this.buildLabelPicker();
    this.buildSliders();
    this.bindMap();
    this.bindMapControls();
    this.bindInterpolation();
    this.bindSample();
    this.bindOwnInput();
    [this.map, this.decoder] = await Promise.all([
      api(`${this.base()}/map`),
      BrowserDecoder.create(this.run, this.base(), runtimeFolder,
        offline ? offline.decoder : null).catch((error) => {
        this.status(`decoding on the server: ${error.message}`, true);
        return null;
      }),
    ]);
    this.q(".run-info").textContent += this.decoder
      ? " · decoded in the browser" : " · decoded by the server";
    this.q(".run-info").title = this.run.decoding;
    this.root.dataset.decoding = this.decoder ? "browser" : "server";
    this.setSliderRanges(this.map.ranges);
    this.buildColourBy();
    this.q(".from").max = this.q(".to").max = Math.max(...this.map.indices);
    if (offline) this.keepToThePage();
    const z = await this.readState(`${index}.`);
    this.refreshMap();
    if (z) this.goToCode(z);
    else this.hover(this.meanPoint(), { propagate: false });
    await Promise.all([this.interpolate(), this.sample(this.seed)]);
  }

  base() {
    return `/api/runs/${encodeURIComponent(this.run.name)}`;
  }

  describe() {
    const r = this.run;
    this.root.setAttribute("aria-label", `run ${r.name}`);
    this.q(".run-name").textContent = r.name;
    const kind = r.completion ? ", completion model"
      : r.conditional ? `, conditional on ${r.labels.length} classes` : "";
    this.q(".run-info").textContent =
      `${r.model}, latent ${r.latent_dim}, ${r.channels}×${r.height}×${r.width}${kind}`;
    const from = {
      normal: r.has_prior ? "z ~ N(0, T² I), the prior"
        : "z ~ N(0, T² I) (this model has no prior, and too few codes for a mixture)",
      mixture: `a mixture of ${r.mixture ? r.mixture.weights.length : 0} Gaussians fitted to `
        + "the test codes (this model has no prior)",
      prior: "the run's own prior, at T = 1",
    }[r.sampler];
    this.q(".sampler-note").textContent = `from ${from}`;
    const t = this.q(".temperature");
    t.disabled = !r.temperature;
    if (!r.temperature) t.title = "this prior is drawn at temperature 1 only";
  }

  // An offline page: what needs the server is left out; the interpolation starts between
  // the first two test images it carries.
  keepToThePage() {
    this.q(".own-card").hidden = true;
    if (!this.drawnHere(0)) this.q(".sample").closest(".decoded-card").classList.add("no-samples");
    [this.q(".from").value, this.q(".to").value] = this.map.indices.slice(0, 2);
  }

  // ---- the state of the view, in the URL (see saveState)

  writeState(state, key) {
    if (!this.map) return;
    const f = (values) => values.map((v) => Number(v.toPrecision(6))).join(",");
    if (this.layout !== "plane") state.set(`${key}layout`, this.layout);
    if (this.view) {
      const v = this.view;
      state.set(`${key}view`, f([v.xmin, v.xmax, v.ymin, v.ymax]));
    }
    if (this.z) state.set(`${key}z`, f(this.z));
    if (this.pinned) state.set(`${key}pin`, f(this.pinned));
    if (this.grid) state.set(`${key}grid`, "1");
    if (this.temperature !== 1) state.set(`${key}t`, String(this.temperature));
    if (this.seed) state.set(`${key}seed`, String(this.seed));
    if (this.run.conditional) state.set(`${key}class`, String(this.label));
    state.set(`${key}path`, `${this.q(".from").value},${this.q(".to").value}`);
  }

  // Take the state a link gave (before the map is drawn); returns the code it showed, or null.
  async readState(key) {
    const get = (name) => urlState.get(`${key}${name}`);
    const layout = get("layout");
    if (layout === "tsne" && this.run.latent_dim > 2) await this.setLayout("tsne", { draw: false });
    const view = numbers(get("view"), 4);
    if (view && view[0] < view[1] && view[2] < view[3]) {
      this.view = { xmin: view[0], xmax: view[1], ymin: view[2], ymax: view[3] };
    }
    this.pinned = numbers(get("pin"), 2);
    const t = Number(get("t"));
    if (t > 0 && t <= 2) this.setTemperature(t, { propagate: false, resample: false });
    const seed = Number(get("seed"));
    if (Number.isInteger(seed) && seed > 0) {
      this.seed = seed;
      sampleSeed = Math.max(sampleSeed, seed);
    }
    const k = Number(get("class"));
    if (this.run.conditional && Number.isInteger(k) && k >= 0 && k < this.run.labels.length) {
      this.label = k;
      this.q(".label-pick").value = String(k);
    }
    const path = numbers(get("path"), 2);
    if (path && path.every((i) => Number.isInteger(i) && i >= 0)) {
      [this.q(".from").value, this.q(".to").value] = path;
    }
    if (get("grid") === "1") this.setGrid(true, { draw: false });
    return numbers(get("z"), this.run.latent_dim); // the code to show, if any
  }

  // ---- the class of a conditional run; a completion model's note

  // A completion model decodes only with the observed part of an image: say so, show no cards.
  showUnavailable() {
    this.unavailable = true;
    const note = this.q(".unavailable");
    const command = document.createElement("code");
    command.textContent = "vaelab complete";
    note.textContent = "";
    note.append(`This run is a completion model (cvae --observe ${this.run.observe}): decoding `
      + "a code needs the observed part of an image, so the latent map, decoder, samples and "
      + "interpolation are not available for it here. To complete images, use ", command, ".");
    note.hidden = false;
    this.q(".cards").hidden = true;
  }

  // The class picker, starting at the class of test image 0 (the interpolation's start).
  async buildLabelPicker() {
    const select = this.q(".label-pick");
    this.run.labels.forEach((name, k) => select.append(new Option(name, String(k))));
    this.label = 0;
    try {
      const first = await api(`${this.base()}/test_image/0`);
      if (first.label >= 0 && first.label < this.run.labels.length) this.label = first.label;
    } catch { /* no test image 0: class 0 */ }
    select.value = String(this.label);
    select.addEventListener("change", () => this.setLabel(Number(select.value)));
    this.q(".label-pick-label").hidden = false;
    const names = this.q(".analogy-names");
    this.run.labels.forEach((name) => {
      const item = document.createElement("li");
      item.textContent = name;
      item.title = name;
      names.append(item);
    });
  }

  // The body of a decode, sample or interpolate request, with the picked class where needed.
  labelled(body) {
    return this.run.conditional ? { ...body, label: this.label } : body;
  }

  labelName(k) {
    return this.run.labels ? this.run.labels[k] : String(k);
  }

  // Decode, sample and interpolate again as class k (and re-encode your input for a cvae, which
  // encodes with the class too); linked runs with the same classes follow.
  setLabel(k, { propagate = true } = {}) {
    const valid = this.run.conditional && Number.isInteger(k) && k >= 0
      && k < this.run.labels.length;
    if (valid && k !== this.label) {
      this.label = k;
      this.q(".label-pick").value = String(k);
      if (this.lastQuery) this.requestDecode(this.lastQuery);
      if (this.grid) this.refreshMap();
      this.sample(this.seed);
      this.interpolate();
      if (this.source && !this.run.classifier) this.encode(this.source);
    }
    if (propagate) {
      forOthers(this, (p) => {
        if (sameLabels(this.run, p.run)) p.setLabel(k, { propagate: false });
      });
    }
  }

  // ---- map geometry: layout (x, y) <-> canvas pixels <-> fraction of the view

  layoutPoints() {
    return this.layout === "tsne" ? this.embedding.points : this.map.points;
  }

  layoutBounds() {
    return this.layout === "tsne" ? this.embedding.bounds : this.map.bounds;
  }

  bounds() {
    return this.view || this.layoutBounds();
  }

  toCanvas([x, y]) {
    const b = this.bounds();
    const c = this.q(".map");
    const w = c.width - 2 * MAP_PAD;
    const h = c.height - 2 * MAP_PAD;
    return [MAP_PAD + ((x - b.xmin) / (b.xmax - b.xmin)) * w,
      MAP_PAD + ((b.ymax - y) / (b.ymax - b.ymin)) * h];
  }

  fromFraction([fx, fy]) {
    const b = this.bounds();
    return [b.xmin + fx * (b.xmax - b.xmin), b.ymax - fy * (b.ymax - b.ymin)];
  }

  toFraction([x, y]) {
    const b = this.bounds();
    return [(x - b.xmin) / (b.xmax - b.xmin), (b.ymax - y) / (b.ymax - b.ymin)];
  }

  // The fraction of the plotted area under a pointer event (outside 0..1 in the padding).
  eventFraction(event) {
    const c = this.q(".map");
    const box = c.getBoundingClientRect();
    const px = ((event.clientX - box.left) / box.width) * c.width;
    const py = ((event.clientY - box.top) / box.height) * c.height;
    return [(px - MAP_PAD) / (c.width - 2 * MAP_PAD), (py - MAP_PAD) / (c.height - 2 * MAP_PAD)];
  }

  // Project a code onto the map plane: ((z - center)·a0, (z - center)·a1).
  project(z) {
    const { center, axes } = this.map.plane;
    return axes.map((a) => a.reduce((sum, ai, i) => sum + ai * (z[i] - center[i]), 0));
  }

  // Where a code shows on the map: its projection on the plane; on the t-SNE map, the point
  // of the nearest test code.
  locate(z) {
    if (this.layout === "plane") return this.project(z);
    return this.embedding.points[nearest(this.embedding.codes, z)];
  }

  // The code that a layout point stands for: the plane's lift; on the t-SNE map, the code of
  // the nearest point (the map has no inverse).
  codeAt(point) {
    if (this.layout === "plane") return liftPoint(point, this.map.plane);
    return this.embedding.codes[nearest(this.embedding.points, point)];
  }

  // The mean of the points on the map: a start that lies among the data.
  meanPoint() {
    const points = this.layoutPoints();
    const n = points.length;
    return points.reduce(([sx, sy], [x, y]) => [sx + x / n, sy + y / n], [0, 0]);
  }

  nearestIndex(point) {
    return this.map.indices[nearest(this.layoutPoints(), point)];
  }

  // ---- the map's controls: layout, decoded grid, zoom and pan

  bindMapControls() {
    const layout = this.q(".layout");
    if (this.run.latent_dim > 2) {
      this.q(".layout-label").hidden = false;
      layout.addEventListener("change", () => this.setLayout(layout.value));
    }
    this.q(".grid-toggle").addEventListener("change", (e) => this.setGrid(e.target.checked));
    this.q(".zoom-in").addEventListener("click", () => this.zoom(1 / ZOOM_STEP));
    this.q(".zoom-out").addEventListener("click", () => this.zoom(ZOOM_STEP));
    this.q(".zoom-reset").addEventListener("click", () => this.setView(null));
  }

  // Show the PCA plane ("plane") or the t-SNE map ("tsne", fetched once: some seconds).
  async setLayout(layout, { draw = true } = {}) {
    if (layout === this.layout) return;
    if (layout === "tsne" && !this.embedding) {
      this.status("computing the t-SNE map of the codes…");
      try {
        this.embedding = await api(`${this.base()}/embedding`);
      } catch (error) {
        this.status(`t-SNE: ${error.message}`, true);
        this.q(".layout").value = this.layout;
        return;
      }
      this.status("");
    }
    const z = this.z;
    this.layout = layout;
    this.view = null;
    this.q(".layout").value = layout;
    this.q(".grid-toggle").disabled = layout !== "plane";
    this.q(".grid-toggle").title = layout === "plane" ? ""
      : "the t-SNE map has no inverse: the grid is decoded on the PCA plane";
    this.cursor = z ? this.locate(z) : null;
    this.pinned = null;
    this.keyPoint = null;
    if (draw) this.refreshMap();
    saveState();
  }

  setGrid(on, { draw = true } = {}) {
    this.grid = on;
    this.q(".grid-toggle").checked = on;
    if (draw) this.refreshMap();
    saveState();
  }

  // Zoom by `factor` (< 1: in) about a layout point (default: the view's centre).
  zoom(factor, about = null) {
    const b = this.bounds();
    const [cx, cy] = about || [(b.xmin + b.xmax) / 2, (b.ymin + b.ymax) / 2];
    this.setView({
      xmin: cx + (b.xmin - cx) * factor, xmax: cx + (b.xmax - cx) * factor,
      ymin: cy + (b.ymin - cy) * factor, ymax: cy + (b.ymax - cy) * factor,
    });
  }

  setView(view) {
    const ok = view && [view.xmin, view.xmax, view.ymin, view.ymax].every(Number.isFinite)
      && view.xmax - view.xmin > 1e-9 && view.ymax - view.ymin > 1e-9;
    this.view = ok ? view : null;
    this.refreshMap();
    saveState();
  }

  // Redraw the map for a new view, layout or class: the points at once, the decoded grid
  // after (tiles of an earlier view are dropped, never drawn).
  refreshMap() {
    this.gridVersion += 1;
    this.gridImage = null;
    delete this.q(".map").dataset.grid;
    this.drawScatter();
    this.redraw();
    if (this.grid && this.layout === "plane") this.decodeGrid();
  }

  // The manifold: GRID_N x GRID_N images decoded at the centres of the view's cells. One
  // grid decodes at a time; views asked for meanwhile are skipped but the latest.
  async decodeGrid() {
    if (this.gridBusy) {
      this.gridWanted = true;
      return;
    }
    this.gridBusy = true;
    try {
      do {
        this.gridWanted = false;
        await this.decodeGridNow(this.gridVersion);
      } while (this.gridWanted);
    } finally {
      this.gridBusy = false;
    }
  }

  async decodeGridNow(version) {
    if (version !== this.gridVersion || !this.grid || this.layout !== "plane") return;
    const c = this.q(".map");
    const cell = (c.width - 2 * MAP_PAD) / GRID_N;
    const centres = [];
    for (let row = 0; row < GRID_N; row++) {
      for (let col = 0; col < GRID_N; col++) {
        centres.push(this.fromFraction([(col + 0.5) / GRID_N, (row + 0.5) / GRID_N]));
      }
    }
    try {
      const images = await this.decodeMany(centres.map((p) => liftPoint(p, this.map.plane)));
      if (version !== this.gridVersion) return; // the view moved on meanwhile
      const off = document.createElement("canvas");
      [off.width, off.height] = [c.width, c.height];
      await Promise.all(images.map((image, i) => drawImage(off, image, [
        MAP_PAD + (i % GRID_N) * cell, MAP_PAD + Math.floor(i / GRID_N) * cell, cell, cell])));
      if (version !== this.gridVersion) return;
      this.gridImage = off;
      this.drawScatter();
      this.redraw();
      c.dataset.grid = "drawn"; // for tests
    } catch (error) {
      this.status(`grid: ${error.message}`, true);
    }
  }

  // Images of many codes: in the browser, else from the server a row of the grid at a time.
  async decodeMany(zs) {
    if (this.decoder) return this.decoder.decode(zs);
    const images = [];
    for (let i = 0; i < zs.length; i += GRID_N) {
      const body = this.labelled({ z: zs.slice(i, i + GRID_N) });
      images.push(...(await api(`${this.base()}/decode`, body)).images);
    }
    return images;
  }

  // ---- drawing the map

  // The "colour by" select, shown only for data with known factors.
  buildColourBy() {
    if (!this.run.factors || !this.map.factors) return;
    const select = this.q(".colour-by");
    const names = [CLASS, ...this.run.factors.map((f) => f.name)];
    for (const name of names) {
      const text = name !== CLASS ? name : this.map.labels ? "class" : "none";
      select.append(new Option(text, name));
    }
    select.addEventListener("change", () => this.setColourBy(select.value));
    this.q(".colour-by-label").hidden = false;
  }

  // Recolour the map by `key`; linked panels follow where their data has that factor.
  setColourBy(key, { propagate = true } = {}) {
    const known = key === CLASS || (this.map && this.map.factors
      && this.run.factors.some((f) => f.name === key));
    if (known && key !== this.colourBy) {
      this.colourBy = key;
      this.q(".colour-by").value = key;
      this.drawScatter();
      this.redraw();
    }
    if (propagate) forOthers(this, (p) => p.setColourBy(key, { propagate: false }));
  }

  drawScatter() {
    const c = this.q(".map");
    const off = document.createElement("canvas");
    off.width = c.width;
    off.height = c.height;
    const ctx = off.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, off.width, off.height);
    const [x0, y0, w, h] = [MAP_PAD, MAP_PAD, off.width - 2 * MAP_PAD, off.height - 2 * MAP_PAD];
    if (this.gridImage) ctx.drawImage(this.gridImage, 0, 0);
    ctx.strokeStyle = "#ccc";
    ctx.strokeRect(x0, y0, w, h);
    const scheme = colouring(this.run, this.map, this.colourBy);
    ctx.save();
    ctx.beginPath();
    ctx.rect(x0, y0, w, h);
    ctx.clip(); // zoomed in, points beyond the view stay out of the margins
    ctx.globalAlpha = this.gridImage ? 0.35 : 0.7;
    this.layoutPoints().forEach((p, i) => {
      const [x, y] = this.toCanvas(p);
      ctx.fillStyle = scheme.colours[i];
      ctx.fillRect(x - 2, y - 2, 4, 4);
    });
    ctx.restore();
    this.drawAxisLabels(ctx, off);
    this.mapImage = off;
    // For tests and tools: what colours the points, and each point's colour in map order.
    c.dataset.colourBy = this.colourBy || "class";
    c.dataset.colours = scheme.colours.join(" ");
    c.dataset.layout = this.layout;
    c.dataset.zoomed = String(Boolean(this.view));
    this.drawLegend(scheme);
  }

  drawAxisLabels(ctx, canvas) {
    const b = this.bounds();
    const f = (v) => v.toFixed(1);
    const axes = { tsne: ["t-SNE 1", "t-SNE 2"], pca: ["PC1", "PC2"], identity: ["z1", "z2"] }[
      this.layout === "tsne" ? "tsne" : this.map.projection];
    ctx.fillStyle = "#555";
    ctx.font = "16px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    ctx.fillText(f(b.xmin), MAP_PAD, canvas.height - MAP_PAD / 2);
    const right = f(b.xmax);
    ctx.fillText(right, canvas.width - MAP_PAD - ctx.measureText(right).width,
      canvas.height - MAP_PAD / 2);
    ctx.fillText(`${f(b.ymax)}`, 4, MAP_PAD / 2);
    ctx.fillText(`${axes[0]} →`, canvas.width / 2 - 20, canvas.height - MAP_PAD / 2);
    ctx.fillText(`↑ ${axes[1]}`, canvas.width / 2 - 20, MAP_PAD / 2);
    this.q(".projection").textContent = {
      tsne: "(t-SNE of the test codes; decodes the nearest code)",
      pca: "(PCA plane; other directions at the mean)",
      identity: "(the 2-D latent space)",
    }[this.layout === "tsne" ? "tsne" : this.map.projection];
  }

  // Discrete colours with their names, or a ramp between its lowest and highest values.
  drawLegend(scheme) {
    const list = this.q(".legend");
    list.textContent = "";
    list.setAttribute("aria-label", scheme.title);
    const swatch = (className, background) => {
      const span = document.createElement("span");
      span.className = className;
      span.style.background = background;
      return span;
    };
    if (scheme.ramp) {
      const item = document.createElement("li");
      const bar = swatch("ramp", rampGradient());
      bar.setAttribute("role", "img");
      bar.setAttribute("aria-label", `from ${scheme.ramp.low} to ${scheme.ramp.high}`);
      item.append(scheme.ramp.low, bar, scheme.ramp.high);
      list.append(item);
    }
    for (const { colour, text } of scheme.items || []) {
      const item = document.createElement("li");
      item.append(swatch("swatch", colour), text);
      list.append(item);
    }
  }

  redraw() {
    const c = this.q(".map");
    const ctx = c.getContext("2d");
    ctx.drawImage(this.mapImage, 0, 0);
    if (this.path && this.layout === "plane") this.drawPath(ctx);
    if (this.ownCode) this.mark(ctx, this.locate(this.ownCode), "#000", "diamond");
    if (this.pinned) this.mark(ctx, this.pinned, "#d62728", "cross");
    if (this.cursor) this.mark(ctx, this.cursor, "#111", "ring");
  }

  drawPath(ctx) {
    const pts = this.path.points.map((p) => this.toCanvas(p));
    ctx.strokeStyle = "rgba(0, 0, 0, 0.6)";
    ctx.lineWidth = 2;
    ctx.beginPath();
    pts.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.stroke();
    const [fx, fy] = pts[this.frame] || pts[0];
    ctx.fillStyle = "#ff7f0e";
    ctx.beginPath();
    ctx.arc(fx, fy, 7, 0, 2 * Math.PI);
    ctx.fill();
    ctx.stroke();
  }

  // A marker at `point`, held at the canvas edge when the point lies off the map.
  mark(ctx, point, colour, shape) {
    const edge = (v, size) => Math.max(10, Math.min(v, size - 10));
    const [px, py] = this.toCanvas(point);
    const [x, y] = [edge(px, ctx.canvas.width), edge(py, ctx.canvas.height)];
    ctx.strokeStyle = colour;
    ctx.lineWidth = 3;
    ctx.beginPath();
    if (shape === "ring") ctx.arc(x, y, 9, 0, 2 * Math.PI);
    if (shape === "cross") {
      ctx.moveTo(x - 10, y);
      ctx.lineTo(x + 10, y);
      ctx.moveTo(x, y - 10);
      ctx.lineTo(x, y + 10);
    }
    if (shape === "diamond") {
      [[0, -10], [10, 0], [0, 10], [-10, 0]].forEach(([dx, dy]) => ctx.lineTo(x + dx, y + dy));
      ctx.closePath();
    }
    ctx.stroke();
  }

  // ---- decoding, one request in flight per panel; the latest request wins

  // `eventTime`: the timeStamp of the pointer event that asked, to measure the latency.
  requestDecode(body, eventTime = null) {
    this.lastQuery = body;
    this.pending = this.labelled(body);
    this.pendingEvent = eventTime;
    if (!this.busy) this.pump();
  }

  async pump() {
    this.busy = true;
    while (this.pending) {
      const [body, eventTime] = [this.pending, this.pendingEvent];
      this.pending = this.pendingEvent = null;
      try {
        const image = await this.decodeOne(body);
        await drawImage(this.q(".decoded"), image);
        if (eventTime !== null) {
          const ms = performance.now() - eventTime;
          window.vaelabLatencies.push({ run: this.run.name, event: eventTime, ms });
        }
        if (this.q(".panel-status").classList.contains("error")) this.status("");
      } catch (error) {
        this.status(`decode: ${error.message}`, true);
      }
    }
    this.busy = false;
  }

  // The image of a decode body ({z: [code]}): in the browser, else the server's.
  async decodeOne(body) {
    if (this.decoder) return this.decoder.decodeScratch(body.z[0]);
    return (await api(`${this.base()}/decode`, body)).images[0];
  }

  // Decode the code at a layout point (the pointer's, a key's); linked panels go to the same
  // latent point where they share this latent space, else to the same place on their maps.
  hover(point, { propagate = true, eventTime = null } = {}) {
    const z = this.codeAt(point);
    this.cursor = this.layout === "plane" ? point : this.locate(z);
    this.show(z, eventTime);
    if (propagate) {
      const fraction = this.toFraction(point);
      forOthers(this, (p) => {
        if (sameSpace(this.run, p.run)) p.goToCode(z, { eventTime });
        else p.hover(p.fromFraction(fraction), { propagate: false, eventTime });
      });
    }
  }

  // Decode the code z and mark where it shows on the map.
  goToCode(z, { eventTime = null } = {}) {
    this.cursor = this.locate(z);
    this.show(z, eventTime);
  }

  // Decode z now; the map's marks, the sliders and the nearest image follow at the next frame.
  show(z, eventTime = null) {
    this.requestDecode({ z: [z] }, eventTime);
    this.z = z;
    this.paintSoon();
    saveState();
  }

  paintSoon() {
    if (this.frameAsked) return;
    this.frameAsked = requestAnimationFrame(() => {
      this.frameAsked = null;
      this.writeCodeSoon();
      this.redraw();
      this.showNearest(this.cursor);
    });
  }

  // Decode at a layout point and pin it there; linked panels pin where `hover` moves them.
  pin(point, { propagate = true } = {}) {
    this.hover(point, { propagate });
    const pinHere = (p) => {
      p.pinned = p.cursor;
      p.redraw();
    };
    pinHere(this);
    if (propagate) forOthers(this, pinHere);
    saveState();
  }

  // The readout and the sliders follow the code at most every CODE_EVERY_MS, in a frame that
  // is drawn anyway, and the last code once it rests: laying out and painting twenty range
  // inputs at every move cost each frame several times the decode (measured in a Chromium
  // trace), for numbers nobody reads at 60 Hz.
  writeCodeSoon() {
    this.root.dataset.z = this.z.join(","); // for tests and tools: the code shown, in full
    clearTimeout(this.codeTimer);
    const write = () => {
      this.codeWritten = performance.now();
      this.writeCode(this.z);
    };
    if (performance.now() - this.codeWritten >= CODE_EVERY_MS) write();
    else this.codeTimer = setTimeout(write, CODE_EVERY_MS);
  }

  // The code shown, in the readout and the sliders (which edit it).
  writeCode(z) {
    const shown = z.slice(0, 4).map((v) => v.toFixed(2)).join(", ");
    this.q(".readout").textContent = `z = [${shown}${z.length > 4 ? ", …" : ""}]`;
    this.root.dataset.z = z.join(","); // for tests and tools: the code shown, in full
    this.q(".sliders").querySelectorAll("input").forEach((input, i) => {
      input.value = z[i];
      const text = z[i].toFixed(2);
      if (input.nextElementSibling.textContent !== text) input.nextElementSibling.textContent = text;
    });
  }

  // The map's test images, one PNG (/map_images; an offline page carries it), loaded once.
  mapImages() {
    if (!this.sprite) this.sprite = loadImage(offline ? offline.sprite : `${this.base()}/map_images`);
    return this.sprite;
  }

  // The test image nearest to a layout point, with its label, beside the decoded image: cut
  // from the map's images, with no request.
  async showNearest(point) {
    if (!point) return;
    const i = nearest(this.layoutPoints(), point);
    const index = this.map.indices[i];
    if (index === this.nearestShown) return;
    this.nearestShown = index;
    try {
      const sprite = await this.mapImages();
      if (index !== this.nearestShown) return; // the pointer moved on
      const { width: w, height: h } = this.run;
      const columns = this.map.image_columns;
      const canvas = this.q(".nearest");
      const ctx = canvas.getContext("2d");
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(sprite, (i % columns) * w, Math.floor(i / columns) * h, w, h,
        0, 0, canvas.width, canvas.height);
      const label = this.map.labels ? this.map.labels[i] : null;
      const name = label === null || label < 0 ? ""
        : `: ${this.run.class_names ? this.run.class_names[label] : label}`;
      this.q(".nearest-caption").textContent = `nearest test image #${index}${name}`;
      canvas.dataset.index = String(index);
    } catch (error) {
      this.sprite = null;
      this.status(`test images: ${error.message}`, true);
    }
  }

  bindMap() {
    const c = this.q(".map");
    c.addEventListener("pointerdown", (e) => {
      if (!this.map) return;
      c.setPointerCapture(e.pointerId);
      this.press = { x: e.clientX, y: e.clientY, view: this.bounds(), dragged: false };
    });
    // Chromium delivers pointermove at the next animation frame (up to 16 ms late);
    // pointerrawupdate, where there is one (a secure context: localhost, a file), comes as the
    // pointer moves.
    const move = "onpointerrawupdate" in window ? "pointerrawupdate" : "pointermove";
    c.addEventListener(move, (e) => {
      if (!this.map) return;
      const press = this.press;
      if (press && (press.dragged || Math.hypot(e.clientX - press.x, e.clientY - press.y)
          > DRAG_PIXELS)) {
        press.dragged = true;
        this.panBy(press, e);
        return;
      }
      this.keyPoint = null;
      this.hover(this.fromFraction(this.eventFraction(e)), { eventTime: e.timeStamp });
    });
    c.addEventListener("pointerup", (e) => {
      const press = this.press;
      this.press = null;
      if (!this.map || !press || press.dragged) return;
      const point = this.fromFraction(this.eventFraction(e));
      if (this.q(".pick").getAttribute("aria-pressed") === "true") this.pickPoint(point);
      else this.pin(point);
    });
    c.addEventListener("pointercancel", () => { this.press = null; });
    c.addEventListener("pointerleave", (e) => {
      if (this.map && this.pinned && e.pointerType === "mouse") this.hover(this.pinned);
    });
    c.addEventListener("wheel", (e) => {
      if (!this.map) return;
      if (e.deltaY === 0) return; // a sideways swipe
      e.preventDefault();
      // a mouse notch (deltaY 100) zooms by ZOOM_STEP; a trackpad's small steps by less
      const pixels = e.deltaMode === 1 ? 33 * e.deltaY : e.deltaY;
      const factor = ZOOM_STEP ** Math.max(-3, Math.min(3, pixels / 100));
      this.zoom(factor, this.fromFraction(this.eventFraction(e)));
    }, { passive: false });
    c.addEventListener("keydown", (e) => this.onKey(e));
  }

  // Drag to pan: the view moves with the pointer from where it was pressed.
  panBy(press, e) {
    const c = this.q(".map");
    const box = c.getBoundingClientRect();
    const scale = c.width / box.width / (c.width - 2 * MAP_PAD);
    const v = press.view;
    const dx = (e.clientX - press.x) * scale * (v.xmax - v.xmin);
    const dy = (e.clientY - press.y) * scale * (v.ymax - v.ymin);
    this.setView({ xmin: v.xmin - dx, xmax: v.xmax - dx, ymin: v.ymin + dy, ymax: v.ymax + dy });
  }

  onKey(e) {
    if (!this.map) return;
    const step = (e.shiftKey ? 10 : 1) * KEY_STEP;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step],
      ArrowDown: [0, step] };
    // on the t-SNE map the cursor snaps to a point: keys move on from where they went
    const from = (this.layout === "tsne" && this.keyPoint) || this.cursor || this.meanPoint();
    const [fx, fy] = this.toFraction(from);
    if (moves[e.key]) {
      const [dx, dy] = moves[e.key];
      const point = this.fromFraction([fx + dx, fy + dy]);
      this.hover(point, { eventTime: e.timeStamp });
      this.keyPoint = point;
    } else if (e.key === "Enter" || e.key === " ") {
      this.pin(this.cursor || this.meanPoint());
    } else if (e.key === "+" || e.key === "=") {
      this.zoom(1 / ZOOM_STEP, this.cursor);
    } else if (e.key === "-") {
      this.zoom(ZOOM_STEP, this.cursor);
    } else if (e.key === "0") {
      this.setView(null);
    } else {
      return;
    }
    e.preventDefault();
  }

  // ---- per-dimension sliders

  buildSliders() {
    const box = this.q(".sliders");
    const shown = Math.min(this.run.latent_dim, MAX_SLIDERS);
    if (this.run.latent_dim > MAX_SLIDERS) {
      this.q(".sliders-note").textContent =
        `(the first ${MAX_SLIDERS} of ${this.run.latent_dim})`;
    }
    for (let i = 0; i < shown; i++) {
      const label = document.createElement("label");
      const input = document.createElement("input");
      const value = document.createElement("output");
      Object.assign(input, { type: "range", min: -3, max: 3, step: 0.01, value: 0 }); // until the map
      input.setAttribute("aria-label", `latent dimension ${i + 1}`);
      input.addEventListener("input", () => this.setDimension(i, Number(input.value)));
      label.append(`z${i + 1}`, input, value);
      box.append(label);
    }
  }

  // Each slider over its dimension's range (the prior's, or the run's own codes'), in 500 steps.
  setSliderRanges(ranges) {
    this.q(".sliders").querySelectorAll("input").forEach((input, i) => {
      const [low, high] = ranges[i];
      Object.assign(input, { min: low, max: high, step: (high - low) / 500 });
    });
  }

  setDimension(i, value) {
    if (!this.z) return;
    const z = this.z.slice();
    z[i] = value;
    this.goToCode(z);
  }

  // ---- interpolation between two test images

  bindInterpolation() {
    const update = () => this.selectPair(Number(this.q(".from").value),
      Number(this.q(".to").value));
    this.q(".from").addEventListener("change", update);
    this.q(".to").addEventListener("change", update);
    this.q(".spherical").addEventListener("change", () => this.interpolate());
    this.q(".frame-slider").addEventListener("input", (e) => {
      const frame = Number(e.target.value);
      this.showFrame(frame);
      forOthers(this, (p) => p.showFrame(frame));
    });
    this.q(".pick").addEventListener("click", () => {
      const on = this.q(".pick").getAttribute("aria-pressed") !== "true";
      this.q(".pick").setAttribute("aria-pressed", String(on));
      this.picking = [];
      this.status(on ? "click the start point on the map" : "");
    });
  }

  pickPoint(point) {
    this.picking.push(this.nearestIndex(point));
    if (this.picking.length < 2) {
      this.status(`from test image ${this.picking[0]}: now click the end point`);
      return;
    }
    const [a, b] = this.picking;
    this.picking = [];
    this.q(".pick").setAttribute("aria-pressed", "false");
    this.status("");
    this.selectPair(a, b);
  }

  selectPair(from, to, { propagate = true } = {}) {
    this.q(".from").value = from;
    this.q(".to").value = to;
    this.interpolate();
    saveState();
    if (propagate) forOthers(this, (p) => p.selectPair(from, to, { propagate: false }));
  }

  // The code of test image `index`, fetched once (the test codes are the server's data).
  async testCode(index) {
    if (!this.codes.has(index)) {
      this.codes.set(index, api(`${this.base()}/test_image/${index}`).then((r) => r.z));
    }
    return this.codes.get(index);
  }

  // The interpolation path {images, points}: decoded here, or by the server.
  async interpolationPath(from, to, spherical) {
    if (this.decoder) {
      const [a, b] = await Promise.all([this.testCode(from), this.testCode(to)]);
      const zs = pathBetween(a, b, INTERP_STEPS, spherical);
      return { images: await this.decoder.decode(zs), points: zs.map((z) => this.project(z)) };
    }
    const body = this.labelled({ from_index: from, to_index: to, steps: INTERP_STEPS, spherical });
    return api(`${this.base()}/interpolate`, body);
  }

  async interpolate() {
    const [from, to] = [Number(this.q(".from").value), Number(this.q(".to").value)];
    try {
      const path = await this.interpolationPath(from, to, this.q(".spherical").checked);
      this.path = path;
      const slider = this.q(".frame-slider");
      slider.max = path.images.length - 1;
      this.frame = Math.min(this.frame, path.images.length - 1);
      await Promise.all([
        drawImage(this.q(".interp-from"), path.images[0]),
        drawImage(this.q(".interp-to"), path.images[path.images.length - 1]),
        drawGrid(this.q(".strip"), path.images, path.images.length),
      ]);
      this.showFrame(this.frame);
    } catch (error) {
      this.status(`interpolation: ${error.message}`, true);
    }
  }

  showFrame(frame) {
    if (!this.path) return;
    this.frame = Math.max(0, Math.min(frame, this.path.images.length - 1));
    this.q(".frame-slider").value = this.frame;
    this.q(".frame-number").textContent = `${this.frame + 1} / ${this.path.images.length}`;
    drawImage(this.q(".frame"), this.path.images[this.frame]);
    this.redraw();
  }

  // ---- samples from the prior (or an autoencoder's mixture), at a temperature

  bindSample() {
    this.q(".sample").addEventListener("click", () => {
      sampleSeed += 1;
      this.sample(sampleSeed);
      forOthers(this, (p) => p.sample(sampleSeed));
    });
    this.q(".temperature").addEventListener("input", (e) =>
      this.setTemperature(Number(e.target.value)));
  }

  setTemperature(t, { propagate = true, resample = true } = {}) {
    if (!this.run.temperature) return;
    this.temperature = t;
    this.q(".temperature").value = String(t);
    this.q(".temperature-value").textContent = t.toFixed(2);
    if (resample) this.sample(this.seed);
    if (propagate) forOthers(this, (p) => p.setTemperature(t, { propagate: false }));
  }

  // The codes to decode as samples, where the page can draw them itself; else null.
  drawnHere(seed) {
    const { sampler, latent_dim: d, mixture } = this.run;
    if (!this.decoder) return null;
    if (sampler === "normal") return normalCodes(SAMPLE_N, d, seed, this.temperature);
    if (sampler === "mixture") return mixtureCodes(SAMPLE_N, mixture, seed, this.temperature);
    return null;
  }

  async sample(seed) {
    const asked = ++this.sampleAsked;
    try {
      this.seed = seed;
      const codes = this.drawnHere(seed);
      let images;
      if (codes) {
        images = await this.decoder.decode(codes);
      } else {
        const body = this.labelled({ n: SAMPLE_N, seed });
        if (this.run.temperature) body.temperature = this.temperature;
        images = (await api(`${this.base()}/sample`, body)).images;
      }
      if (asked !== this.sampleAsked) return; // a newer draw was asked for meanwhile
      await drawGrid(this.q(".samples"), images, Math.ceil(Math.sqrt(SAMPLE_N)));
      const of = this.run.conditional ? ` of class ${this.labelName(this.label)}` : "";
      const at = this.run.temperature ? `, T = ${this.temperature.toFixed(2)}` : "";
      this.status(`samples${of} with seed ${seed}${at}`);
      saveState();
    } catch (error) {
      this.status(`sample: ${error.message}`, true);
    }
  }

  // ---- your own input: upload or draw, then encode

  bindOwnInput() {
    const draw = this.q(".draw");
    clearDrawing(draw);
    bindDrawing(draw, () => this.encodeEverywhere(draw));
    this.q(".clear").addEventListener("click", () => clearDrawing(draw));
    this.q(".encode").addEventListener("click", () => this.encodeEverywhere(draw));
    this.q(".upload").addEventListener("change", (e) => {
      const file = e.target.files[0];
      if (file) this.encodeEverywhere(URL.createObjectURL(file));
    });
    const grey = this.run.channels === 1;
    // off where the data has known factors: a position may be one of them (shapes)
    this.q(".centre").checked = grey && !this.run.factors;
    this.q(".centre").disabled = !grey;
    if (!grey) this.q(".centre-label").title = "centring is for grey digits and the like";
    const again = () => { if (this.source) this.encode(this.source); };
    this.q(".polarity").addEventListener("change", again);
    this.q(".centre").addEventListener("change", again);
  }

  // `source`: an image URL, or the drawing canvas (copied now: it may change).
  encodeEverywhere(source) {
    let src = source;
    if (source instanceof HTMLCanvasElement) {
      src = document.createElement("canvas");
      [src.width, src.height] = [source.width, source.height];
      src.getContext("2d").drawImage(source, 0, 0);
    }
    this.encode(src);
    forOthers(this, (p) => p.encode(src));
  }

  // Prepare the input as the run's data looks (inputs.js), show it, encode it and go to its
  // code: the sliders then edit the encoded input. A cvae encodes with the picked class; an
  // m2 with the class its classifier infers.
  async encode(source) {
    const asked = ++this.encodeAsked;
    try {
      this.source = source;
      const options = { polarity: this.q(".polarity").value, centre: this.q(".centre").checked };
      const prepared = await prepareInput(source, this.run, options);
      await drawImage(this.q(".input-shown"), prepared.canvas);
      const image = prepared.canvas.toDataURL("image/png");
      const body = this.run.conditional && !this.run.classifier
        ? { image, label: this.label } : { image };
      const result = await api(`${this.base()}/encode`, body);
      if (asked !== this.encodeAsked) return; // a newer input (or option) was asked for
      await Promise.all([
        drawImage(this.q(".recon"), result.reconstruction),
        this.showAnalogies(result),
      ]);
      this.showPrediction(result.prediction);
      this.ownCode = result.z;
      this.root.dataset.encoded = result.z.join(","); // for tests and tools
      this.goToCode(result.z);
      const done = [prepared.inverted && "inverted", prepared.centred && "centred"]
        .filter(Boolean);
      const how = done.length ? ` (${done.join(", ")})` : "";
      const as = result.label === null ? "" : ` as class ${this.labelName(result.label)}`;
      this.status(`your input${how} encoded${as}: the sliders now edit its code`);
    } catch (error) {
      this.status(`encode: ${error.message}`, true);
    }
  }

  // The analogy row: your input's code decoded as every class, one thumbnail each.
  async showAnalogies(result) {
    const box = this.q(".analogy-box");
    if (!result.analogies) {
      box.hidden = true;
      return;
    }
    const canvas = this.q(".analogies");
    const cell = 24;
    canvas.width = result.analogies.length * cell;
    canvas.height = Math.round((cell * this.run.height) / this.run.width);
    canvas.setAttribute("aria-label", "your input's code decoded as each class: "
      + this.run.labels.join(", "));
    box.hidden = false;
    await drawGrid(canvas, result.analogies, result.analogies.length);
  }

  // An m2's classifier: the most probable class of your input, and its probability.
  showPrediction(prediction) {
    const node = this.q(".prediction");
    node.hidden = !prediction;
    if (!prediction) return;
    const percent = (100 * prediction.probability).toFixed(0);
    node.textContent = `classifier: ${this.labelName(prediction.label)} (${percent}%)`;
  }
}

// ---------------------------------------------------------------- the drawing canvas

function clearDrawing(canvas) {
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
}

// White strokes about a tenth of the canvas wide, like an MNIST digit's pen.
function bindDrawing(canvas, onStrokeEnd) {
  const ctx = canvas.getContext("2d");
  let last = null;
  const at = (e) => {
    const box = canvas.getBoundingClientRect();
    return [((e.clientX - box.left) / box.width) * canvas.width,
      ((e.clientY - box.top) / box.height) * canvas.height];
  };
  canvas.addEventListener("pointerdown", (e) => {
    canvas.setPointerCapture(e.pointerId);
    last = at(e);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!last) return;
    const next = at(e);
    Object.assign(ctx, { strokeStyle: "#fff", lineWidth: canvas.width / 12, lineCap: "round" });
    ctx.beginPath();
    ctx.moveTo(...last);
    ctx.lineTo(...next);
    ctx.stroke();
    last = next;
  });
  canvas.addEventListener("pointerup", () => {
    if (last) onStrokeEnd();
    last = null;
  });
}

// ---------------------------------------------------------------- start

// Say how linked panels move: to the same latent point, or by place on their maps.
function describeLink(runs) {
  const note = document.getElementById("link-note");
  const shown = runs.filter((r) => !r.completion);
  const together = shown.every((r) => sameSpace(shown[0], r));
  note.textContent = together ? "(to the same latent point)"
    : "(by place on each map: these runs' latent spaces differ in size)";
}

async function main() {
  const status = document.getElementById("status");
  try {
    const { runs, runtime } = await api("/api/runs");
    runtimeFolder = runtime;
    const template = document.getElementById("panel-template");
    const box = document.getElementById("panels");
    box.classList.toggle("two", runs.length > 1);
    document.getElementById("link-label").hidden = runs.length < 2;
    if (runs.length > 1) {
      describeLink(runs);
      document.getElementById("link").checked = urlState.get("link") !== "0";
      document.getElementById("link").addEventListener("change", saveState);
    }
    for (const run of runs) {
      const root = template.content.firstElementChild.cloneNode(true);
      box.append(root);
      panels.push(new Panel(run, root));
    }
    await Promise.all(panels.map((p, k) => p.init(k).catch((error) =>
      p.status(`could not load: ${error.message}`, true))));
    document.body.dataset.ready = "true"; // for tests: every map is drawn
  } catch (error) {
    setStatus(status, `could not load the runs: ${error.message}`, true);
  }
}

main();
