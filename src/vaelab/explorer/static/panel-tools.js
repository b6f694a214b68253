// The tools of an explorer panel (explorer.js) beside its map: a slider per latent dimension,
// interpolation between two test images, samples at a temperature, and your own input
// (uploaded or drawn, then encoded). Methods of Panel, kept in a file of their own and mixed
// in (mixIn); the drawing canvas's helpers below.
"use strict";

class PanelTools {
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

mixIn(Panel, PanelTools);

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
