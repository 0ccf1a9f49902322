// Pictures drawn in SVG: a workflow's graph with each node's state, and bar charts.
// Every name and value is set with textContent: node ids and model names are data.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
// As in flowengine/web/dag.py, so that the live graph and the report's look alike.
const NODE_W = 184, NODE_H = 46, GAP_X = 56, GAP_Y = 18, MARGIN = 8;

function svgElement(name, attributes = {}, text = null) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (text !== null) element.textContent = text;
  return element;
}

// Each node's column: one more than its deepest need's (nodes come in run order).
function columnsOf(nodes) {
  const depth = new Map();
  for (const node of nodes) {
    const upstream = node.needs.filter((need) => depth.has(need)).map((need) => depth.get(need));
    depth.set(node.id, 1 + Math.max(-1, ...upstream));
  }
  return depth;
}

function arrowMarker() {
  const marker = svgElement("marker", {
    id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse",
  });
  marker.append(svgElement("path", { d: "M0,0 L10,5 L0,10 z", fill: "#8c959f" }));
  const defs = svgElement("defs");
  defs.append(marker);
  return defs;
}

// The graph of `nodes` ([{id, type, needs}]), every node `pending`; setState changes one.
class LiveGraph {
  constructor(nodes) {
    const depth = columnsOf(nodes);
    const rows = new Map();
    const place = new Map();
    for (const node of nodes) {
      const column = depth.get(node.id);
      const row = rows.get(column) || 0;
      rows.set(column, row + 1);
      place.set(node.id, [MARGIN + column * (NODE_W + GAP_X), MARGIN + row * (NODE_H + GAP_Y)]);
    }
    const width = 2 * MARGIN + rows.size * (NODE_W + GAP_X) - GAP_X;
    const height = 2 * MARGIN + Math.max(0, ...rows.values()) * (NODE_H + GAP_Y) - GAP_Y;
    this.svg = svgElement("svg", {
      class: "dag", role: "img", "aria-label": "the workflow's nodes and their state",
      viewBox: `0 0 ${width} ${height}`, width, height,
    });
    this.svg.append(arrowMarker());
    for (const node of nodes) {
      for (const need of node.needs.filter((n) => place.has(n))) {
        this.svg.append(edge(place.get(need), place.get(node.id), `${node.id} needs ${need}`));
      }
    }
    this.boxes = new Map(nodes.map((node) => [node.id, this.box(node, place.get(node.id))]));
    this.calls = new Map();
  }

  box(node, [x, y]) {
    const group = svgElement("g", { class: "node pending", transform: `translate(${x},${y})` });
    group.dataset.node = node.id;
    group.dataset.kind = node.type;
    const title = svgElement("title", {}, `${node.id} (${node.type}): pending`);
    const name = node.id.length > 24 ? node.id.slice(0, 23) + "…" : node.id;
    group.append(
      title,
      svgElement("rect", { width: NODE_W, height: NODE_H, rx: 6 }),
      svgElement("text", { class: "name", x: 10, y: 19 }, name),
      svgElement("text", { class: "state", x: 10, y: 36 }, `${node.type} · pending`),
    );
    this.svg.append(group);
    return group;
  }

  // A node's new state from an event; `detail` is why it failed or was skipped.
  setState(id, state, detail) {
    const group = this.boxes.get(id);
    if (!group) return; // a node of a loop's round: the graph shows the loop
    group.setAttribute("class", `node ${state}`);
    const calls = this.calls.get(id) || 0;
    const parts = [group.dataset.kind, state];
    if (calls) parts.push(`${calls} call${calls === 1 ? "" : "s"}`);
    group.querySelector(".state").textContent = parts.join(" · ");
    group.querySelector("title").textContent =
      `${id} (${group.dataset.kind}): ${state}${detail ? ` (${detail})` : ""}`;
  }

  addCall(id) {
    this.calls.set(id, (this.calls.get(id) || 0) + 1);
    const group = this.boxes.get(id);
    if (group) this.setState(id, group.getAttribute("class").split(" ")[1]);
  }
}

function edge([x1, y1], [x2, y2], title) {
  const [startX, startY, endX, endY] = [x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2];
  const bend = Math.max((endX - startX) / 2, 16);
  const path = svgElement("path", {
    class: "edge",
    d: `M${startX},${startY} C${startX + bend},${startY} ${endX - bend},${endY} ${endX},${endY}`,
  });
  path.append(svgElement("title", {}, title));
  return path;
}

// A horizontal bar chart: one bar per [label, value]; a null value shows as "–", with no bar.
function barChart(title, rows, format) {
  const labelW = 150, barW = 320, rowH = 24;
  const most = Math.max(0, ...rows.map(([, value]) => value || 0));
  const svg = svgElement("svg", {
    class: "chart", role: "img", "aria-label": title,
    viewBox: `0 0 ${labelW + barW + 90} ${rows.length * rowH}`,
    width: labelW + barW + 90, height: rows.length * rowH,
  });
  rows.forEach(([label, value], index) => {
    const y = index * rowH;
    const row = svgElement("g", { class: "row", transform: `translate(0,${y})` });
    row.dataset.label = label;
    row.append(svgElement("text", { class: "label", x: 0, y: 16 }, label));
    const width = value && most ? Math.max(1, (barW * value) / most) : 0;
    if (width) row.append(svgElement("rect", { x: labelW, y: 4, width, height: rowH - 8 }));
    const shown = value === null || value === undefined ? "–" : format(value);
    row.append(svgElement("text", { class: "value", x: labelW + width + 6, y: 16 }, shown));
    svg.append(row);
  });
  const figure = document.createElement("figure");
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  figure.append(caption, svg);
  return figure;
}
