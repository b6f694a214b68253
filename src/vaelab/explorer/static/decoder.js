// vaelab explorer: decoding in the browser. A run's decoder, exported to ONNX by the server
// (/api/runs/{run}/decoder.onnx), runs here with onnxruntime-web, whose files vaelab serves
// itself (/static/vendor/onnxruntime-web/, vendored from npm by `make web`; never a CDN).
// Also the maths the page needs without the server: the map plane's lift, linear and
// spherical paths, and seeded draws from N(0, I).
"use strict";

let runtime = null; // the promise of the loaded `ort` global, once

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error("could not load onnxruntime-web"));
    document.head.append(script);
  });
}

// The bytes of a base64 text in the page (an offline page's element `id`).
function inlineBytes(id) {
  const text = document.getElementById(id).textContent.trim();
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

function blobUrl(bytes, type) {
  return URL.createObjectURL(new Blob([bytes], { type }));
}

// onnxruntime-web from `folder` (served by vaelab), or, on an offline page ("inline"), from
// the page itself: its scripts from blob URLs, its WebAssembly gunzipped in the browser.
function loadRuntime(folder) {
  if (!runtime) {
    runtime = (async () => {
      const inline = folder === "inline";
      await loadScript(inline ? blobUrl(inlineBytes("vaelab-ort-js"), "text/javascript")
        : `${folder}ort.wasm.min.js`);
      const ort = window.ort;
      if (inline) {
        const packed = new Blob([inlineBytes("vaelab-ort-wasm")]).stream();
        const wasm = await new Response(packed.pipeThrough(new DecompressionStream("gzip")))
          .arrayBuffer();
        ort.env.wasm.wasmBinary = new Uint8Array(wasm);
        ort.env.wasm.wasmPaths = { mjs: blobUrl(inlineBytes("vaelab-ort-mjs"), "text/javascript") };
      } else {
        ort.env.wasm.wasmPaths = folder;
      }
      ort.env.wasm.numThreads = 1; // threads need cross-origin isolation; one is enough here
      ort.env.logLevel = "error";
      return ort;
    })();
  }
  return runtime;
}

class BrowserDecoder {
  // The decoder of `run` (from /api/runs), or null when the run is decoded by the server;
  // `inlineModel`: an offline page's decoder, in base64 (else it is fetched).
  static async create(run, base, folder, inlineModel = null) {
    if (!run.browser_decoder || !folder) return null;
    const [ort, bytes] = await Promise.all([
      loadRuntime(folder),
      inlineModel !== null ? Promise.resolve(Uint8Array.from(atob(inlineModel), (c) =>
        c.charCodeAt(0))) : fetch(`${base}/decoder.onnx`).then((r) => {
        if (!r.ok) throw new Error(`decoder.onnx: ${r.status}`);
        return r.arrayBuffer();
      }),
    ]);
    const model = new Uint8Array(bytes);
    const session = await ort.InferenceSession.create(model, {
      executionProviders: ["wasm"],
      graphOptimizationLevel: "all",
    });
    return new BrowserDecoder(ort, session, run);
  }

  constructor(ort, session, run) {
    this.ort = ort;
    this.session = session;
    this.run = run;
    this.queue = Promise.resolve(); // onnxruntime-web runs one session call at a time
    this.scratch = null; // decodeScratch's canvas
  }

  // Codes `rows` (B arrays of D numbers) -> B canvases at the data's own size.
  decode(rows) {
    return this.queued(() => this.decodeNow(rows, () => this.newCanvas()));
  }

  // One code -> the decoder's own scratch canvas, valid until its next call: the pointer's
  // path, which draws it at once, allocates nothing per move.
  decodeScratch(row) {
    if (!this.scratch) this.scratch = this.newCanvas();
    return this.queued(async () => (await this.decodeNow([row], () => this.scratch))[0]);
  }

  queued(task) {
    const call = this.queue.then(task);
    this.queue = call.catch(() => {});
    return call;
  }

  newCanvas() {
    const canvas = document.createElement("canvas");
    [canvas.width, canvas.height] = [this.run.width, this.run.height];
    canvas.image = canvas.getContext("2d").createImageData(this.run.width, this.run.height);
    return canvas;
  }

  // Decode `rows` into canvases from `target()`.
  async decodeNow(rows, target) {
    const { latent_dim: d, channels: c, height: h, width: w } = this.run;
    const z = new Float32Array(rows.length * d);
    rows.forEach((row, i) => z.set(row, i * d));
    const feeds = { z: new this.ort.Tensor("float32", z, [rows.length, d]) };
    const out = await this.session.run(feeds, ["mean"]);
    const mean = out.mean.data;
    const [low, high] = this.run.data_range;
    const scale = 255 / Math.max(high - low, 1e-12);
    const plane = h * w;
    return rows.map((_, b) => {
      const canvas = target();
      const px = canvas.image.data;
      const offset = b * c * plane;
      for (let i = 0; i < plane; i++) {
        for (let k = 0; k < 3; k++) {
          // the data's range maps to [0, 255], clamped, as the server's PNGs do
          const v = (mean[offset + (c === 3 ? k * plane : 0) + i] - low) * scale;
          px[4 * i + k] = v !== v ? 0 : Math.max(0, Math.min(255, Math.round(v)));
        }
        px[4 * i + 3] = 255;
      }
      canvas.getContext("2d").putImageData(canvas.image, 0, 0);
      return canvas;
    });
  }
}

// A point of the map plane as a code: center + x * axes[0] + y * axes[1].
function liftPoint([x, y], plane) {
  const { center, axes } = plane;
  return center.map((c, i) => c + x * axes[0][i] + y * axes[1][i]);
}

// `steps` codes from a to b, linear or spherical (slerp, as vaelab.models.slerp).
function pathBetween(a, b, steps, spherical) {
  const ts = Array.from({ length: steps }, (_, i) => i / (steps - 1));
  const lerp = (t) => a.map((ai, i) => ai + t * (b[i] - ai));
  if (!spherical) return ts.map(lerp);
  const dot = a.reduce((s, ai, i) => s + ai * b[i], 0);
  const norms = Math.hypot(...a) * Math.hypot(...b);
  const omega = Math.acos(Math.max(-1, Math.min(1, dot / Math.max(norms, 1e-12))));
  const sin = Math.sin(omega);
  if (Math.abs(sin) < 1e-6) return ts.map(lerp); // (anti)parallel: no great circle
  return ts.map((t) => a.map((ai, i) =>
    (Math.sin((1 - t) * omega) * ai + Math.sin(t * omega) * b[i]) / sin));
}

// A seeded source of N(0, 1) draws (mulberry32 and Box-Muller; not the server's draws), and
// of uniform ones in [0, 1).
function seededRandom(seed) {
  let state = (seed * 2654435761) >>> 0;
  const uniform = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = () => {
    const u = 1 - uniform(); // in (0, 1]
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * uniform());
  };
  return { uniform, normal };
}

// `n` codes of `d` values from N(0, temperature^2 I), the same for the same seed.
function normalCodes(n, d, seed, temperature = 1) {
  const { normal } = seededRandom(seed);
  return Array.from({ length: n }, () => Array.from({ length: d }, () => temperature * normal()));
}

// `n` codes from a Gaussian mixture (RunInfo.mixture: weights, means, cholesky): a component
// by its weight, then mean + temperature * L eps, the same for the same seed.
function mixtureCodes(n, mixture, seed, temperature = 1) {
  const { uniform, normal } = seededRandom(seed);
  const { weights, means, cholesky } = mixture;
  const pick = () => {
    let u = uniform();
    for (let k = 0; k < weights.length; k++) {
      u -= weights[k];
      if (u < 0) return k;
    }
    return weights.length - 1;
  };
  return Array.from({ length: n }, () => {
    const k = pick();
    const eps = means[k].map(() => normal());
    return means[k].map((m, i) =>
      m + temperature * cholesky[k][i].reduce((s, l, j) => s + (j <= i ? l * eps[j] : 0), 0));
  });
}
