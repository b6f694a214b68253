// vaelab explorer: the colours of the latent map's points, by class label or by one of the
// data's known generative factors (`factors` in /api/runs and /map). A categorical factor (a
// shape) gets discrete colours named in a legend; an ordered one (a position, an angle) a ramp
// over its physical values, from the factor's smallest value to its largest, so that two runs
// of the same data colour alike. Loaded before explorer.js.
"use strict";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22", "#17becf"];
const UNLABELLED = "#4a6fa5";
// viridis (matplotlib) at 0, 1/4, ..., 1: even in lightness, so order reads in grey and for
// most colour-blind readers too.
const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const CLASS = ""; // the colour-by key of the class labels; other keys are (non-empty) factor names

function categoryColour(k) {
  // -1 marks an unlabelled image (a semi-supervised run's training split)
  return k === null || k === undefined || k < 0 ? UNLABELLED : PALETTE[k % PALETTE.length];
}

// t in [0, 1] -> "#rrggbb", linear in RGB between the ramp's stops.
function rampColour(t) {
  const u = Math.max(0, Math.min(1, t)) * (RAMP.length - 1);
  const i = Math.min(Math.floor(u), RAMP.length - 2);
  const rgb = RAMP[i].map((a, c) => Math.round(a + (u - i) * (RAMP[i + 1][c] - a)));
  return `#${rgb.map((v) => v.toString(16).padStart(2, "0")).join("")}`;
}

function rampGradient() {
  const stops = RAMP.map((_, i) => rampColour(i / (RAMP.length - 1)));
  return `linear-gradient(to right, ${stops.join(", ")})`;
}

function sortedUnique(values) {
  return [...new Set(values)].sort((a, b) => a - b);
}

// How to colour `map` (a /map response of `run`) by `key`: the class labels, or the factor of
// that name. Returns { colours: one "#rrggbb" per map point, title: the legend's name, and
// either items: [{ colour, text }] (discrete) or ramp: { low, high } (the legend's end texts) }.
function colouring(run, map, key) {
  const f = key === CLASS || !map.factors ? -1 : run.factors.findIndex((g) => g.name === key);
  if (f < 0) {
    const labels = map.labels;
    const name = (k) => (k < 0 ? "unlabelled" : run.class_names ? run.class_names[k] : String(k));
    const present = labels ? sortedUnique(labels) : [];
    return {
      colours: map.points.map((_, i) => categoryColour(labels ? labels[i] : null)),
      title: "class colours",
      items: present.map((k) => ({ colour: categoryColour(k), text: name(k) })),
    };
  }
  const factor = run.factors[f];
  const indices = map.factors.map((row) => row[f]); // (M,) this factor's index at each point
  const title = `${factor.name} colours`;
  if (factor.categorical) {
    const items = sortedUnique(indices).map((k) => ({
      colour: categoryColour(k), text: factor.labels[k],
    }));
    return { colours: indices.map(categoryColour), title, items };
  }
  const low = Math.min(...factor.values);
  const high = Math.max(...factor.values);
  const t = (k) => (high > low ? (factor.values[k] - low) / (high - low) : 0.5);
  return {
    colours: indices.map((k) => rampColour(t(k))),
    title,
    ramp: {
      low: factor.labels[factor.values.indexOf(low)],
      high: factor.labels[factor.values.indexOf(high)],
    },
  };
}
