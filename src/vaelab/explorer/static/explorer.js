// vaelab explorer: one panel per run, talking to the JSON API of vaelab/explorer/app.py.
// Plain JS; its one library, onnxruntime-web, is served by vaelab (decoder.js): it must work
// offline. Where a run's decoder runs in the browser (decoder.js), moving over the map, the
// sliders, interpolation, the decoded grid and sampling decode here without a request;
// otherwise, and for uploads, the server decodes and images arrive as PNG data URLs. Either way
// images are at the data's own resolution and are drawn scaled up without smoothing. The map's
// colours come from colours.js, your own input's preparation from inputs.js; a panel's map is
// in panel-map.js, its sliders, interpolation, samples and own input in panel-tools.js. A
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
const TEXT_EVERY_MS = 100; // the pace of the sliders, readout and caption while the code moves
const URL_REST_MS = 250; // the view's rest before its state is written into the URL
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

// Copy the methods of `part` onto `cls`: a panel's map and tools live in files of their own
// (panel-map.js, panel-tools.js).
function mixIn(cls, part) {
  for (const name of Object.getOwnPropertyNames(part.prototype)) {
    if (name === "constructor") continue;
    Object.defineProperty(cls.prototype, name,
      Object.getOwnPropertyDescriptor(part.prototype, name));
  }
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

// Write every panel's state into the URL's #fragment once the view has rested URL_REST_MS.
// Not while the pointer moves: each history.replaceState cost Chromium's browser process about
// 70 ms of CPU; without the writes, Chromium spent 35-38 % less CPU a move (README, latency).
function saveState() {
  if (offline) return; // an offline page lives in a frame of its own: no URL
  clearTimeout(urlTimer);
  urlTimer = setTimeout(() => {
    urlTimer = null;
    const state = new URLSearchParams();
    if (panels.length > 1 && !linked()) state.set("link", "0");
    panels.forEach((p, k) => p.writeState(state, `${k}.`));
    history.replaceState(null, "", `#${state.toString()}`);
  }, URL_REST_MS);
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
    this.textTimer = null;     // the next update of the sliders, readout and caption (writeTextSoon)
    this.textWritten = -Infinity; // when they were last updated
    this.pending = null;       // the latest decode request waiting to be sent
    this.pendingEvent = null;  // the timestamp of the pointer event that asked for it
    this.decoder = null;       // the run's decoder in the browser (decoder.js), else null
    this.codes = new Map();    // test image index -> its code, fetched once
    this.sprite = null;        // the promise of the map's test images (mapImages)
    this.nearestShown = -1;    // the test image shown as the nearest
    this.nearestText = null;   // its caption, written with the text (writeTextSoon)
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

  // Decode z now; the map's ring, the sliders and the nearest image follow at the next frame.
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
      this.showNearest(this.cursor);
      this.writeTextSoon();
      this.placeCursor();
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

  // The text that follows the pointer (the readout, the sliders, the nearest image's caption)
  // is written at most every TEXT_EVERY_MS, in a frame that is drawn anyway, and once more when
  // the pointer rests: laying it out and painting it at every move cost each frame several
  // times the decode (measured in a Chromium trace), for words nobody reads at 60 Hz.
  writeTextSoon() {
    this.root.dataset.z = this.z.join(","); // for tests and tools: the code shown, in full
    clearTimeout(this.textTimer);
    const write = () => {
      this.textWritten = performance.now();
      this.writeCode(this.z);
      const caption = this.q(".nearest-caption");
      if (this.nearestText && caption.textContent !== this.nearestText) {
        caption.textContent = this.nearestText;
      }
    };
    if (performance.now() - this.textWritten >= TEXT_EVERY_MS) write();
    else this.textTimer = setTimeout(write, TEXT_EVERY_MS);
  }

  // The code shown, in the readout and the sliders (which edit it).
  writeCode(z) {
    const shown = z.slice(0, 4).map((v) => v.toFixed(2)).join(", ");
    this.q(".readout").textContent = `z = [${shown}${z.length > 4 ? ", …" : ""}]`;
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

  // The test image nearest to a layout point beside the decoded image, cut from the map's
  // images with no request; its caption (its label) follows with the text (writeTextSoon).
  async showNearest(point) {
    if (!point) return;
    const i = nearest(this.layoutPoints(), point);
    const index = this.map.indices[i];
    if (index === this.nearestShown) return;
    this.nearestShown = index;
    const label = this.map.labels ? this.map.labels[i] : null;
    const name = label === null || label < 0 ? ""
      : `: ${this.run.class_names ? this.run.class_names[label] : label}`;
    this.nearestText = `nearest test image #${index}${name}`;
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
      canvas.dataset.index = String(index);
    } catch (error) {
      this.sprite = null;
      this.status(`test images: ${error.message}`, true);
    }
  }

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

// After every script of the page, the panel's parts included.
document.addEventListener("DOMContentLoaded", main);
