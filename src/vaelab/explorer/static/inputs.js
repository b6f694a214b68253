// vaelab explorer: your own image (an upload or a drawing) made to look like the run's data
// before it is encoded, at the run's own size.
// - Transparency: a transparent image's opaque part is its ink; it is laid onto the data's
//   background (RunInfo.background, e.g. MNIST's black) in the opposite shade for grey data,
//   composited onto the background colour for colour data.
// - Polarity: "auto" inverts a grey image whose border is far from the data's background (a
//   black digit on white paper for MNIST's white on black); "invert" and "as-is" force it.
// - Centring (grey data): the ink's bounding box scaled to fit 20 of 28 pixels, keeping its
//   aspect, then moved so that its centre of mass is the image's centre, as MNIST's digits were
//   prepared (LeCun et al., the MNIST database's description).
"use strict";

const WORK_SIDE = 512; // an image is read at most this many pixels on its longer side
const MNIST_BOX = 20 / 28; // the share of the image the ink's longer side fills when centred
const INK_THRESHOLD = 0.1; // of the strongest ink: fainter pixels do not set the bounding box

function canvasOf(width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  return canvas;
}

function luminance(r, g, b) {
  return (0.299 * r + 0.587 * g + 0.114 * b) / 255;
}

// The image read into arrays: per-channel values in [0, 1] (C, H*W) and the alpha (H*W).
function readPixels(img, channels) {
  const scale = Math.min(1, WORK_SIDE / Math.max(img.naturalWidth || img.width,
    img.naturalHeight || img.height, 1));
  const w = Math.max(1, Math.round((img.naturalWidth || img.width) * scale));
  const h = Math.max(1, Math.round((img.naturalHeight || img.height) * scale));
  const ctx = canvasOf(w, h).getContext("2d", { willReadFrequently: true });
  ctx.drawImage(img, 0, 0, w, h);
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const values = Array.from({ length: channels }, () => new Float32Array(w * h));
  const alpha = new Float32Array(w * h);
  for (let i = 0; i < w * h; i++) {
    const [r, g, b, a] = [rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2], rgba[4 * i + 3]];
    alpha[i] = a / 255;
    if (channels === 1) values[0][i] = luminance(r, g, b);
    else [r, g, b].forEach((v, k) => { values[k][i] = v / 255; });
  }
  return { w, h, values, alpha };
}

function borderMedian(plane, w, h) {
  const border = [];
  for (let x = 0; x < w; x++) border.push(plane[x], plane[(h - 1) * w + x]);
  for (let y = 0; y < h; y++) border.push(plane[y * w], plane[y * w + w - 1]);
  border.sort((a, b) => a - b);
  return border[Math.floor(border.length / 2)];
}

// Transparency and polarity: values (C, H*W) in [0, 1] on the data's background. Returns
// whether the image was inverted.
function settle(pixels, background, polarity) {
  const { w, h, values, alpha } = pixels;
  const transparent = alpha.some((a) => a < 0.98);
  const grey = values.length === 1;
  values.forEach((plane, k) => {
    const bg = background[Math.min(k, background.length - 1)];
    const ink = bg < 0.5 ? 1 : 0;
    for (let i = 0; i < plane.length; i++) {
      if (transparent && grey) plane[i] = bg + alpha[i] * (ink - bg);
      else plane[i] = alpha[i] * plane[i] + (1 - alpha[i]) * bg;
    }
  });
  let invert = polarity === "invert";
  if (polarity === "auto" && grey && !transparent) {
    invert = Math.abs(borderMedian(values[0], w, h) - background[0]) > 0.5;
  }
  if (invert) values.forEach((plane) => plane.forEach((v, i) => { plane[i] = 1 - v; }));
  return invert;
}

// Values (C, H*W) in [0, 1], one channel (grey) or three, as a canvas.
function valuesCanvas(values, w, h) {
  const canvas = canvasOf(w, h);
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    const rgb = values.map((plane) => Math.round(255 * Math.max(0, Math.min(1, plane[i]))));
    image.data.set(rgb.length === 1 ? [rgb[0], rgb[0], rgb[0], 255] : [...rgb, 255], 4 * i);
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

function fill(ctx, background, w, h) {
  const shade = background.map((v) => Math.round(255 * v));
  const [r, g, b] = shade.length === 1 ? [shade[0], shade[0], shade[0]] : shade;
  ctx.fillStyle = `rgb(${r}, ${g}, ${b})`;
  ctx.fillRect(0, 0, w, h);
}

// The ink's bounding box [x0, y0, x1, y1) (pixels differing from the background by more than
// INK_THRESHOLD of the strongest), or null for a blank image.
function inkBox(plane, w, h, bg) {
  let strongest = 0;
  plane.forEach((v) => { strongest = Math.max(strongest, Math.abs(v - bg)); });
  if (strongest < 0.05) return null;
  let [x0, y0, x1, y1] = [w, h, 0, 0];
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (Math.abs(plane[y * w + x] - bg) > INK_THRESHOLD * strongest) {
        [x0, y0] = [Math.min(x0, x), Math.min(y0, y)];
        [x1, y1] = [Math.max(x1, x + 1), Math.max(y1, y + 1)];
      }
    }
  }
  return [x0, y0, x1, y1];
}

// The centre of mass of the ink |v - bg| of a canvas, in its pixels; null when blank.
function inkCentre(canvas, bg) {
  const { width: w, height: h } = canvas;
  const data = canvas.getContext("2d").getImageData(0, 0, w, h).data;
  let [mass, sx, sy] = [0, 0, 0];
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const ink = Math.abs(data[4 * (y * w + x)] / 255 - bg);
      [mass, sx, sy] = [mass + ink, sx + ink * (x + 0.5), sy + ink * (y + 0.5)];
    }
  }
  return mass > 0 ? [sx / mass, sy / mass] : null;
}

// `source` (a URL or a canvas) as the run's data looks: a canvas at (width, height) and what
// was done to it. `options`: { polarity: "auto" | "invert" | "as-is", centre: boolean }.
async function prepareInput(source, run, options) {
  const img = typeof source === "string" ? await loadImage(source) : source;
  const grey = run.channels === 1;
  const pixels = readPixels(img, grey ? 1 : 3);
  const inverted = settle(pixels, run.background, options.polarity);
  const { w, h, values } = pixels;
  const full = valuesCanvas(values, w, h);
  const out = canvasOf(run.width, run.height);
  const ctx = out.getContext("2d");
  ctx.imageSmoothingQuality = "high";
  fill(ctx, run.background, run.width, run.height);
  const box = grey && options.centre ? inkBox(values[0], w, h, run.background[0]) : null;
  if (!box) {
    ctx.drawImage(full, 0, 0, run.width, run.height);
    return { canvas: out, inverted, centred: false };
  }
  const [x0, y0, x1, y1] = box;
  const scale = (MNIST_BOX * Math.min(run.width, run.height)) / Math.max(x1 - x0, y1 - y0);
  const [bw, bh] = [(x1 - x0) * scale, (y1 - y0) * scale];
  const place = (dx, dy) => {
    fill(ctx, run.background, run.width, run.height);
    ctx.drawImage(full, x0, y0, x1 - x0, y1 - y0,
      (run.width - bw) / 2 + dx, (run.height - bh) / 2 + dy, bw, bh);
  };
  place(0, 0);
  const centre = inkCentre(out, run.background[0]);
  if (centre) place(Math.round(run.width / 2 - centre[0]), Math.round(run.height / 2 - centre[1]));
  return { canvas: out, inverted, centred: true };
}
