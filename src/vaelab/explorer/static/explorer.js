// vaelab explorer: one panel per run, talking to the JSON API of vaelab/explorer/app.py.
// Plain JS; its one library, onnxruntime-web, is served by vaelab (decoder.js): it must work
// offline. Where a run's decoder runs in the browser (decoder.js), moving over the map, the
// sliders, interpolation and sampling decode here without a request; otherwise, and for
// uploads, the server decodes and images arrive as PNG data URLs. Either way images are at the
// data's own resolution and are drawn scaled up without smoothing. The map's colours come from
// colours.js. A label-conditional run (a cvae, an m2) gets a class picker: every decode, sample
// and interpolation carries the picked class, and your own input is shown decoded as every
// class. A completion model (a cvae trained with --observe) gets a note instead of the panel.
"use strict";

const MAX_SLIDERS = 16;
const INTERP_STEPS = 16;
const SAMPLE_N = 16;
const MAP_PAD = 24; // canvas pixels around the plotted bounds

const panels = [];
let sampleSeed = 0;
let runtimeFolder = null; // where onnxruntime-web is served from; null: not installed
// For tests and benchmarks: ms from each map pointer event to its image drawn, per panel.
window.vaelabLatencies = [];

// ---------------------------------------------------------------- helpers

async function api(path, body) {
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

// Resize any image to the run's (width, height) on black, as a PNG data URL for /encode.
async function toNativeSize(src, width, height) {
  const img = await loadImage(src);
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, width, height);
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(img, 0, 0, width, height);
  return canvas.toDataURL("image/png");
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

// ---------------------------------------------------------------- a panel per run

class Panel {
  constructor(run, root) {
    this.run = run;
    this.root = root;
    this.q = (sel) => root.querySelector(sel);
    this.map = null;           // the /map response
    this.colourBy = CLASS;     // what colours the map's points: CLASS or a factor's name
    this.mapImage = null;      // the scatter drawn once, offscreen
    this.cursor = null;        // [x, y] in latent-plane coordinates
    this.pinned = null;
    this.ownPoint = null;      // the code of the user's own input
    this.path = null;          // the interpolation response
    this.frame = 0;
    this.z = null;             // the code of the decoded image
    this.pending = null;       // the latest decode request waiting to be sent
    this.pendingEvent = null;  // the timestamp of the pointer event that asked for it
    this.decoder = null;       // the run's decoder in the browser (decoder.js), else null
    this.codes = new Map();    // test image index -> its code, fetched once
    this.busy = false;
    this.picking = [];         // test indices chosen in "click two points" mode
    this.label = null;         // the picked class of a conditional run, sent with every decode
    this.lastQuery = null;     // the latest decode body (points or z), redone for a new class
    this.seed = sampleSeed;    // the seed of the samples shown
    this.input = null;         // your own input, at the run's size, as a PNG data URL
    this.unavailable = false;  // a completion model: no map, decoder or samples
  }

  status(message, isError = false) {
    setStatus(this.q(".panel-status"), message, isError);
  }

  async init() {
    this.describe();
    if (this.run.completion) {
      this.showUnavailable();
      return;
    }
    if (this.run.conditional) await this.buildLabelPicker();
    this.buildSliders();
    this.bindMap();
    this.bindInterpolation();
    this.bindSample();
    this.bindOwnInput();
    [this.map, this.decoder] = await Promise.all([
      api(`${this.base()}/map`),
      BrowserDecoder.create(this.run, this.base(), runtimeFolder).catch((error) => {
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
    this.drawScatter();
    this.redraw();
    this.q(".from").max = this.q(".to").max = Math.max(...this.map.indices);
    this.moveTo(this.toFraction(this.meanPoint()), { propagate: false });
    await Promise.all([this.interpolate(), this.sample(sampleSeed)]);
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
    if (!r.has_prior) this.q(".sample").title = "this model has no prior: samples may be poor";
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
      this.sample(this.seed);
      this.interpolate();
      if (this.input && !this.run.classifier) this.encode(this.input);
    }
    if (propagate) {
      forOthers(this, (p) => {
        if (sameLabels(this.run, p.run)) p.setLabel(k, { propagate: false });
      });
    }
  }

  // ---- map geometry: latent-plane (x, y) <-> canvas pixels <-> fraction of the bounds

  toCanvas([x, y]) {
    const b = this.map.bounds;
    const c = this.q(".map");
    const w = c.width - 2 * MAP_PAD;
    const h = c.height - 2 * MAP_PAD;
    return [MAP_PAD + ((x - b.xmin) / (b.xmax - b.xmin)) * w,
      MAP_PAD + ((b.ymax - y) / (b.ymax - b.ymin)) * h];
  }

  fromFraction([fx, fy]) {
    const b = this.map.bounds;
    return [b.xmin + fx * (b.xmax - b.xmin), b.ymax - fy * (b.ymax - b.ymin)];
  }

  toFraction([x, y]) {
    const b = this.map.bounds;
    return [(x - b.xmin) / (b.xmax - b.xmin), (b.ymax - y) / (b.ymax - b.ymin)];
  }

  // The fraction of the plotted area under a mouse event (may fall outside 0..1 in the padding).
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

  // The mean of the test codes on the map: a start that lies among the data.
  meanPoint() {
    const n = this.map.points.length;
    return this.map.points.reduce(([sx, sy], [x, y]) => [sx + x / n, sy + y / n], [0, 0]);
  }

  nearestIndex(point) {
    let best = 0;
    let bestDist = Infinity;
    this.map.points.forEach(([x, y], i) => {
      const d = (x - point[0]) ** 2 + (y - point[1]) ** 2;
      if (d < bestDist) [best, bestDist] = [i, d];
    });
    return this.map.indices[best];
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
    ctx.strokeStyle = "#ccc";
    ctx.strokeRect(MAP_PAD, MAP_PAD, off.width - 2 * MAP_PAD, off.height - 2 * MAP_PAD);
    const scheme = colouring(this.run, this.map, this.colourBy);
    ctx.globalAlpha = 0.7;
    this.map.points.forEach((p, i) => {
      const [x, y] = this.toCanvas(p);
      ctx.fillStyle = scheme.colours[i];
      ctx.fillRect(x - 2, y - 2, 4, 4);
    });
    ctx.globalAlpha = 1;
    this.drawAxisLabels(ctx, off);
    this.mapImage = off;
    // For tests and tools: what colours the points, and each point's colour in map order.
    c.dataset.colourBy = this.colourBy || "class";
    c.dataset.colours = scheme.colours.join(" ");
    this.drawLegend(scheme);
  }

  drawAxisLabels(ctx, canvas) {
    const b = this.map.bounds;
    const f = (v) => v.toFixed(1);
    const pca = this.map.projection === "pca";
    ctx.fillStyle = "#555";
    ctx.font = "16px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    ctx.fillText(f(b.xmin), MAP_PAD, canvas.height - MAP_PAD / 2);
    const right = f(b.xmax);
    ctx.fillText(right, canvas.width - MAP_PAD - ctx.measureText(right).width,
      canvas.height - MAP_PAD / 2);
    ctx.fillText(`${f(b.ymax)}`, 4, MAP_PAD / 2);
    ctx.fillText(pca ? "PC1 →" : "z1 →", canvas.width / 2 - 20, canvas.height - MAP_PAD / 2);
    ctx.fillText(pca ? "↑ PC2" : "↑ z2", canvas.width / 2 - 20, MAP_PAD / 2);
    this.q(".projection").textContent = pca
      ? "(PCA plane; other directions at the mean)" : "(the 2-D latent space)";
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
    if (this.path) this.drawPath(ctx);
    if (this.ownPoint) this.mark(ctx, this.ownPoint, "#000", "diamond");
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
        const [image, z] = await this.decodeOne(body);
        await drawImage(this.q(".decoded"), image);
        if (eventTime !== null) {
          const ms = performance.now() - eventTime;
          window.vaelabLatencies.push({ run: this.run.name, event: eventTime, ms });
        }
        // a newer request is waiting: its code, not this older one, is what the sliders show
        if (!this.pending) this.showCode(z);
        if (this.q(".panel-status").classList.contains("error")) this.status("");
      } catch (error) {
        this.status(`decode: ${error.message}`, true);
      }
    }
    this.busy = false;
  }

  // The image and code of a decode body ({points} or {z}): in the browser, else the server's.
  async decodeOne(body) {
    if (this.decoder) {
      const z = body.z ? body.z[0] : liftPoint(body.points[0], this.map.plane);
      const [image] = await this.decoder.decode([z]);
      return [image, z];
    }
    const result = await api(`${this.base()}/decode`, body);
    return [result.images[0], result.z[0]];
  }

  // Move the cursor to a fraction of the map bounds and decode there.
  moveTo(fraction, { propagate = true, eventTime = null } = {}) {
    this.cursor = this.fromFraction(fraction);
    this.redraw();
    this.requestDecode({ points: [this.cursor] }, eventTime);
    if (propagate) forOthers(this, (p) => p.moveTo(fraction, { propagate: false, eventTime }));
  }

  pin(fraction, { propagate = true } = {}) {
    this.pinned = this.fromFraction(fraction);
    this.moveTo(fraction, { propagate: false });
    if (propagate) forOthers(this, (p) => p.pin(fraction, { propagate: false }));
  }

  showCode(z) {
    this.z = z;
    const shown = z.slice(0, 4).map((v) => v.toFixed(2)).join(", ");
    this.q(".readout").textContent = `z = [${shown}${z.length > 4 ? ", …" : ""}]`;
    this.q(".sliders").querySelectorAll("input").forEach((input, i) => {
      input.value = z[i];
      input.nextElementSibling.textContent = z[i].toFixed(2);
    });
  }

  bindMap() {
    const c = this.q(".map");
    c.addEventListener("pointermove", (e) => {
      if (this.map) this.moveTo(this.eventFraction(e), { eventTime: e.timeStamp });
    });
    c.addEventListener("mouseleave", () => {
      if (this.map && this.pinned) this.moveTo(this.toFraction(this.pinned));
    });
    c.addEventListener("click", (e) => {
      if (!this.map) return;
      const fraction = this.eventFraction(e);
      if (this.q(".pick").getAttribute("aria-pressed") === "true") this.pickPoint(fraction);
      else this.pin(fraction);
    });
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
    this.z = z;
    this.cursor = this.project(z);
    this.redraw();
    this.requestDecode({ z: [z] });
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

  pickPoint(fraction) {
    this.picking.push(this.nearestIndex(this.fromFraction(fraction)));
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

  // ---- samples from the prior

  bindSample() {
    this.q(".sample").addEventListener("click", () => {
      sampleSeed += 1;
      this.sample(sampleSeed);
      forOthers(this, (p) => p.sample(sampleSeed));
    });
  }

  async sample(seed) {
    try {
      this.seed = seed;
      let images;
      if (this.decoder && this.run.normal_samples) { // z ~ N(0, I), drawn and decoded here
        images = await this.decoder.decode(normalCodes(SAMPLE_N, this.run.latent_dim, seed));
      } else {
        const body = this.labelled({ n: SAMPLE_N, seed });
        images = (await api(`${this.base()}/sample`, body)).images;
      }
      await drawGrid(this.q(".samples"), images, Math.ceil(Math.sqrt(SAMPLE_N)));
      const of = this.run.conditional ? ` of class ${this.labelName(this.label)}` : "";
      this.status(`samples${of} with seed ${seed}`);
    } catch (error) {
      this.status(`sample: ${error.message}`, true);
    }
  }

  // ---- your own input: upload or draw, then encode

  bindOwnInput() {
    const draw = this.q(".draw");
    clearDrawing(draw);
    bindDrawing(draw, () => this.encodeEverywhere(draw.toDataURL("image/png")));
    this.q(".clear").addEventListener("click", () => clearDrawing(draw));
    this.q(".encode").addEventListener("click",
      () => this.encodeEverywhere(draw.toDataURL("image/png")));
    this.q(".upload").addEventListener("change", (e) => {
      const file = e.target.files[0];
      if (file) this.encodeEverywhere(URL.createObjectURL(file)); // read by toNativeSize
    });
  }

  encodeEverywhere(src) {
    this.encode(src);
    forOthers(this, (p) => p.encode(src));
  }

  // A cvae encodes with the picked class; an m2 with the class its classifier infers.
  async encode(src) {
    try {
      const image = await toNativeSize(src, this.run.width, this.run.height);
      this.input = image;
      const body = this.run.conditional && !this.run.classifier
        ? { image, label: this.label } : { image };
      const result = await api(`${this.base()}/encode`, body);
      await Promise.all([
        drawImage(this.q(".recon"), result.reconstruction),
        this.showAnalogies(result),
      ]);
      this.showPrediction(result.prediction);
      this.ownPoint = result.point;
      this.redraw();
      const as = result.label === null ? "" : ` (as class ${this.labelName(result.label)})`;
      const at = result.point.map((v) => v.toFixed(2)).join(", ");
      this.status(`your input${as}: code at (${at})`);
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

async function main() {
  const status = document.getElementById("status");
  try {
    const { runs, runtime } = await api("/api/runs");
    runtimeFolder = runtime;
    const template = document.getElementById("panel-template");
    const box = document.getElementById("panels");
    box.classList.toggle("two", runs.length > 1);
    document.getElementById("link-label").hidden = runs.length < 2;
    for (const run of runs) {
      const root = template.content.firstElementChild.cloneNode(true);
      box.append(root);
      panels.push(new Panel(run, root));
    }
    await Promise.all(panels.map((p) => p.init().catch((error) =>
      p.status(`could not load: ${error.message}`, true))));
    document.body.dataset.ready = "true"; // for tests: every map is drawn
  } catch (error) {
    setStatus(status, `could not load the runs: ${error.message}`, true);
  }
}

main();
