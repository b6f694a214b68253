// The latent map of an explorer panel (explorer.js): its geometry (layout points, canvas
// pixels, fractions of the view), its controls (layout, decoded grid, zoom and pan), how it
// is drawn, and the pointer and the keyboard on it. Methods of Panel, kept in a file of their
// own and mixed in (mixIn).
"use strict";

class PanelMap {
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
    this.placeCursor();
  }

  // The pointer's ring is an element over the map (.cursor-mark), so that following the
  // pointer moves a layer and repaints nothing.
  placeCursor() {
    const ring = this.q(".cursor-mark");
    if (ring.hidden !== !this.cursor) ring.hidden = !this.cursor;
    if (!this.cursor) return;
    const c = this.q(".map");
    const [x, y] = this.onCanvas(this.cursor);
    const scale = this.mapScale || c.clientWidth / c.width;
    ring.style.transform = `translate(${x * scale}px, ${y * scale}px)`;
  }

  // Where a marker for `point` goes on the map's canvas: held at the edge when the point lies
  // off the map.
  onCanvas(point) {
    const c = this.q(".map");
    const edge = (v, size) => Math.max(10, Math.min(v, size - 10));
    const [x, y] = this.toCanvas(point);
    return [edge(x, c.width), edge(y, c.height)];
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

  // A marker drawn on the map at `point` (see onCanvas).
  mark(ctx, point, colour, shape) {
    const [x, y] = this.onCanvas(point);
    ctx.strokeStyle = colour;
    ctx.lineWidth = 3;
    ctx.beginPath();
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

  bindMap() {
    const c = this.q(".map");
    new ResizeObserver(([entry]) => {
      this.mapScale = entry.contentRect.width / c.width; // CSS pixels per canvas pixel
      if (this.mapImage) this.placeCursor(); // it may fire before the map is there
    }).observe(c);
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
}

mixIn(Panel, PanelMap);
