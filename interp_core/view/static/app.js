/* interp view: the single-page front end of `interp view` (plain JavaScript, no framework).
 *
 * Routes (the URL hash): #/overview, #/grid?<filters>, #/detail/<source>/<id>,
 * #/compare?<filters>, #/training. Every text that comes from the data is put into the page
 * with textContent or setAttribute (never innerHTML), so ids, labels and groups show as text.
 * Errors of the API are shown in the message area (#messages).
 */
"use strict";

(function () {
  const PAGE = 60;
  const SVGNS = "http://www.w3.org/2000/svg";
  const METRICS = [
    ["accuracy", "Accuracy"],
    ["pointing_game", "Pointing game"],
    ["energy_in_box", "Energy in box"],
  ];
  const FACETS = [
    ["label", "Class"],
    ["group", "Group"],
    ["prediction", "Prediction"],
    ["target", "Target"],
  ];
  const NULL = "__null__";

  const state = {
    info: null,
    facets: {},   // source index -> /api/facets answer
    token: 0,     // increases with every route change; late answers of old routes are dropped
    mounted: "",  // "grid:<source>" / "compare" while that view's form is on the page
    list: null,   // the grid's current page, for prev/next in the detail
    timers: [],   // play intervals of the training view
  };

  // -- DOM helpers --------------------------------------------------------------------------
  /** An element with attributes and children; strings become text nodes (never markup). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVGNS, tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "on") {
        for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
      } else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
  }

  function append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  function clear(node) {
    while (node.firstChild) node.firstChild.remove();
    return node;
  }

  const $ = (selector) => document.querySelector(selector);

  // -- formatting ---------------------------------------------------------------------------
  function fmt(value) {
    if (value === null || value === undefined) return "—";
    if (typeof value === "boolean") return value ? "true" : "false";
    if (typeof value === "number") {
      if (Number.isInteger(value)) return String(value);
      const abs = Math.abs(value);
      if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(3);
      return String(Number(value.toPrecision(4)));
    }
    return String(value);
  }

  function pct(stat) {
    return stat ? `${(100 * stat.value).toFixed(1)}%` : "—";
  }

  function interval(stat, percent) {
    if (!stat || stat.low === null || stat.high === null) return "";
    const f = (v) => (percent ? `${(100 * v).toFixed(0)}%` : v.toFixed(2));
    return `[${f(stat.low)}–${f(stat.high)}]`;
  }

  function short(text, n) {
    const s = String(text);
    return s.length > n ? s.slice(0, n - 1) + "…" : s;
  }

  function className(source, value) {
    if (value === null || value === undefined) return "(none)";
    const classes = sourceInfo(source).classes;
    if (typeof value === "number" && classes && value >= 0 && value < classes.length) {
      return classes[value];
    }
    return String(value);
  }

  // -- API ----------------------------------------------------------------------------------
  async function api(path, params) {
    const query = params ? `?${params.toString()}` : "";
    let response;
    try {
      response = await fetch(path + query, { headers: { Accept: "application/json" } });
    } catch (err) {
      throw new Error(`${path}: the server does not answer (${err.message}); is interp view still running?`);
    }
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      throw new Error(`${path}: HTTP ${response.status}, not JSON`);
    }
    if (!response.ok) {
      const reason = body && body.error ? body.error : `HTTP ${response.status}`;
      throw new Error(`${path}: ${reason}`);
    }
    return body;
  }

  function showError(err) {
    const text = err && err.message ? err.message : String(err);
    const box = $("#messages");
    const close = el("button", { type: "button", class: "close", "aria-label": "Dismiss", text: "×" });
    const item = el("div", { class: "message error" }, el("span", { text }), close);
    close.addEventListener("click", () => item.remove());
    box.append(item);
    while (box.children.length > 4) box.firstElementChild.remove();
    document.body.dataset.state = "ready";
  }

  function clearErrors() {
    clear($("#messages"));
  }

  function sourceInfo(index) {
    return state.info.sources[Number(index) || 0] || state.info.sources[0];
  }

  function hasColumn(name) {
    return state.info.columns.some((c) => c.name === name);
  }

  async function facets(source) {
    if (!state.facets[source]) {
      state.facets[source] = await api("/api/facets", new URLSearchParams({ source }));
    }
    return state.facets[source];
  }

  // -- routing ------------------------------------------------------------------------------
  function parseHash() {
    const hash = location.hash.replace(/^#\/?/, "");
    const [path, query] = splitOnce(hash, "?");
    const parts = path.split("/");
    return { view: parts[0] || "", parts: parts.slice(1), params: new URLSearchParams(query || "") };
  }

  function splitOnce(text, sep) {
    const at = text.indexOf(sep);
    return at < 0 ? [text, ""] : [text.slice(0, at), text.slice(at + 1)];
  }

  function go(view, params, replace) {
    const query = params && params.toString();
    const hash = `#/${view}${query ? `?${query}` : ""}`;
    if (hash === location.hash) return;
    if (replace) {
      history.replaceState(null, "", hash);
      route();
    } else location.hash = hash;
  }

  function detailHref(source, id) {
    return `#/detail/${Number(source) || 0}/${encodeURIComponent(id)}`;
  }

  async function route() {
    const token = ++state.token;
    for (const timer of state.timers) clearInterval(timer);
    state.timers = [];
    const { view, parts, params } = parseHash();
    const views = state.info.views;
    const name = view === "detail" ? "detail" : views.includes(view) ? view : views[0];
    if (name !== view) {
      history.replaceState(null, "", `#/${name}`);
    }
    markTab(name === "detail" ? "grid" : name);
    document.body.dataset.state = "loading";
    $("#view").dataset.view = name;
    try {
      if (name === "overview") await overview(token, params);
      else if (name === "grid") await grid(token, params);
      else if (name === "detail") await detail(token, parts[0] || "0", decodeURIComponent(parts.slice(1).join("/")));
      else if (name === "compare") await compare(token, params);
      else if (name === "training") await training(token);
      if (token === state.token) document.body.dataset.state = "ready";
    } catch (err) {
      if (token === state.token) showError(err);
    }
    if (token === state.token) {
      // How many routes have finished: tests (and scripts) wait for this to change.
      document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
    }
  }

  function stale(token) {
    return token !== state.token;
  }

  function setView(...children) {
    state.mounted = "";
    const main = clear($("#view"));
    append(main, children);
    return main;
  }

  // -- header and tabs ----------------------------------------------------------------------
  const TAB_NAMES = { overview: "Overview", grid: "Grid", compare: "Compare", training: "Training" };

  function header() {
    const info = state.info;
    document.title = `interp view · ${info.title}`;
    clear($("#title")).append(el("span", { text: info.title }));
    const box = clear($("#sources"));
    for (const s of info.sources) {
      const bits = [s.kind, `${s.rows.toLocaleString()} ${s.kind === "training" ? "images" : "rows"}`];
      if (s.method) bits.push(s.method);
      if (s.layer) bits.push(`layer ${s.layer}`);
      if (s.model) bits.push(s.model);
      box.append(el("span", { class: "source-chip", title: s.path },
        info.sources.length > 1 ? el("b", { text: `${"AB"[s.index]} ` }) : null,
        el("span", { text: s.name }), el("span", { class: "muted", text: ` · ${bits.join(" · ")}` })));
    }
    const tabs = clear($("#tabs"));
    for (const view of info.views) {
      tabs.append(el("a", { href: `#/${view}`, class: "tab", dataset: { view }, text: TAB_NAMES[view] || view }));
    }
  }

  function markTab(view) {
    for (const tab of document.querySelectorAll("#tabs .tab")) {
      const active = tab.dataset.view === view;
      tab.classList.toggle("active", active);
      if (active) tab.setAttribute("aria-current", "page");
      else tab.removeAttribute("aria-current");
    }
  }

  function sourcePicker(params, view) {
    if (state.info.sources.length < 2) return null;
    const current = params.get("source") || "0";
    const select = el("select", { id: "source", "aria-label": "Audit" },
      state.info.sources.map((s) => el("option", { value: String(s.index), selected: String(s.index) === current,
        text: `${"AB"[s.index]}: ${s.name}` })));
    select.addEventListener("change", () => {
      const next = new URLSearchParams(params);
      if (select.value === "0") next.delete("source");
      else next.set("source", select.value);
      ["label", "group", "prediction", "target", "offset"].forEach((k) => next.delete(k));
      go(view, next);
    });
    return el("label", { class: "inline" }, "Audit ", select);
  }

  // -- overview -----------------------------------------------------------------------------
  async function overview(token, params) {
    const source = params.get("source") || "0";
    const data = await api("/api/overview", new URLSearchParams({ source }));
    if (stale(token)) return;
    const info = sourceInfo(source);
    const cards = el("div", { class: "cards" },
      el("div", { class: "stat" }, el("div", { class: "stat-label", text: "Rows" }),
        el("div", { class: "stat-value", id: "overview-n", text: data.overall.n.toLocaleString() })));
    for (const [key, title] of METRICS) {
      const stat = data.overall[key];
      if (!stat) continue;
      const percent = key !== "energy_in_box";
      cards.append(el("div", { class: "stat" }, el("div", { class: "stat-label", text: title }),
        el("div", { class: "stat-value", text: percent ? pct(stat) : stat.value.toFixed(3) }),
        el("div", { class: "stat-sub", text: `95% ${interval(stat, percent)} · n=${stat.n}` })));
    }
    const sections = [];
    const explain = info.kind === "explain";
    for (const [key, title, column] of [["by_class", explain ? "Per target" : "Per class", explain ? "target" : "label"],
      ["by_group", "Per group", "group"]]) {
      const items = data[key] || [];
      if (!items.length) continue;
      const charts = el("div", { class: "charts" });
      let drawn = 0;
      for (const [metric, label] of METRICS) {
        if (!items.some((item) => item[metric])) continue;
        charts.append(intervalChart(label, metric, items, data.overall[metric], column, source));
        drawn += 1;
      }
      if (!drawn) charts.append(countChart(items, column, source));
      sections.push(el("section", { class: "panel", id: `overview-${key}` },
        el("h2", { text: title }), charts, overviewTable(items, column, source)));
    }
    const flagged = [...(data.by_class || []), ...(data.by_group || [])].filter((i) => i.flags.length);
    setView(
      el("div", { class: "toolbar" }, el("h1", { text: "Overview" }), sourcePicker(params, "overview")),
      cards,
      flagged.length ? el("p", { class: "flag-note", id: "flag-note" },
        el("span", { class: "flag-mark", text: "⚑ differs" }),
        ` ${flagged.length} ${flagged.length === 1 ? "class or group differs" : "classes or groups differ"} from the rest of the rows beyond the 95% interval (both ways).`)
        : el("p", { class: "muted", text: "No class or group differs from the rest beyond the 95% interval." }),
      sections,
      el("p", { class: "muted legend" }, "Dot: the value; bar: its 95% interval (Wilson for rates, Student t for energy in box); dashed line: all rows. Click a row to see its images."),
    );
  }

  function gridHref(column, key, source) {
    const params = new URLSearchParams();
    if (source !== "0") params.set("source", source);
    params.set(column, key === null ? NULL : key);
    return `#/grid?${params}`;
  }

  /** One chart: a row per class or group, a dot with its 95% interval, the overall value dashed. */
  function intervalChart(title, metric, items, overall, column, source) {
    const labelWidth = 160;
    const width = 430;
    const plot = width - labelWidth - 24;
    const rowHeight = 24;
    const top = 22;
    const height = top + rowHeight * items.length + 8;
    const x = (v) => labelWidth + Math.max(0, Math.min(1, v)) * plot;
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
      "aria-label": `${title} per ${column}, with 95% intervals`, dataset: { metric } });
    for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
      chart.append(svg("line", { x1: x(tick), x2: x(tick), y1: top - 4, y2: height - 6, class: "grid-line" }),
        svg("text", { x: x(tick), y: 12, class: "tick", "text-anchor": "middle", text: metric === "energy_in_box" ? tick.toFixed(2) : `${tick * 100}%` }));
    }
    if (overall) {
      chart.append(svg("line", { x1: x(overall.value), x2: x(overall.value), y1: top - 4, y2: height - 6, class: "overall" },
        svg("title", { text: `all rows: ${fmt(overall.value)}` })));
    }
    items.forEach((item, i) => {
      const stat = item[metric];
      const y = top + i * rowHeight + rowHeight / 2;
      const flagged = item.flags.includes(metric);
      const name = item.key === null ? "(none)" : className(source, column === "target" ? Number(item.key) : item.key);
      const row = svg("a", { href: gridHref(column, item.key, source), class: `chart-row${flagged ? " flagged" : ""}`,
        dataset: { key: item.key === null ? NULL : item.key } });
      row.append(svg("title", { text: `${name}: ${stat ? fmt(stat.value) : "no value"} ${interval(stat, false)} (n=${stat ? stat.n : 0})${flagged ? " — differs from the rest" : ""}` }));
      row.append(svg("rect", { x: 0, y: y - rowHeight / 2, width, height: rowHeight, class: "row-hit" }));
      row.append(svg("text", { x: labelWidth - 8, y: y + 4, "text-anchor": "end", class: "row-label",
        text: flagged ? `⚑ ${short(name, 16)}` : short(name, 19) }));
      if (stat) {
        if (stat.low !== null && stat.high !== null) {
          row.append(svg("line", { x1: x(stat.low), x2: x(stat.high), y1: y, y2: y, class: "ci" }),
            svg("line", { x1: x(stat.low), x2: x(stat.low), y1: y - 5, y2: y + 5, class: "ci" }),
            svg("line", { x1: x(stat.high), x2: x(stat.high), y1: y - 5, y2: y + 5, class: "ci" }));
        }
        row.append(svg("circle", { cx: x(stat.value), cy: y, r: 5, class: "dot" }));
      } else {
        row.append(svg("text", { x: labelWidth + 4, y: y + 4, class: "tick", text: "no value" }));
      }
      chart.append(row);
    });
    return el("figure", { class: "chart-box" }, el("figcaption", { text: title }), chart);
  }

  function countChart(items, column, source) {
    const labelWidth = 150;
    const width = 420;
    const rowHeight = 24;
    const most = Math.max(1, ...items.map((i) => i.n));
    const height = rowHeight * items.length + 8;
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": `rows per ${column}` });
    items.forEach((item, i) => {
      const y = i * rowHeight + 4;
      const name = item.key === null ? "(none)" : item.key;
      const bar = ((width - labelWidth - 50) * item.n) / most;
      chart.append(svg("a", { href: gridHref(column, item.key, source), class: "chart-row" },
        svg("text", { x: labelWidth - 8, y: y + 15, "text-anchor": "end", class: "row-label", text: short(name, 20) }),
        svg("rect", { x: labelWidth, y: y + 4, width: bar, height: rowHeight - 8, class: "bar" }),
        svg("text", { x: labelWidth + bar + 6, y: y + 15, class: "tick", text: String(item.n) })));
    });
    return el("figure", { class: "chart-box" }, el("figcaption", { text: "Rows" }), chart);
  }

  function overviewTable(items, column, source) {
    const metrics = METRICS.filter(([m]) => items.some((item) => item[m]));
    const head = el("tr", {}, el("th", { text: column === "label" ? "class" : column }), el("th", { class: "num", text: "n" }),
      metrics.map(([, t]) => el("th", { class: "num", text: t })), metrics.length ? el("th", { text: "differs on" }) : null);
    const body = items.map((item) => el("tr", { class: item.flags.length ? "flagged" : "" },
      el("td", {}, el("a", { href: gridHref(column, item.key, source),
        text: item.key === null ? "(none)" : className(source, column === "target" ? Number(item.key) : item.key) })),
      el("td", { class: "num", text: item.n }),
      metrics.map(([m]) => {
        const stat = item[m];
        const percent = m !== "energy_in_box";
        return el("td", { class: `num${item.flags.includes(m) ? " flag-cell" : ""}` },
          stat ? (percent ? pct(stat) : stat.value.toFixed(3)) : "—",
          el("span", { class: "muted small", text: stat ? ` ${interval(stat, percent)}` : "" }));
      }),
      metrics.length ? el("td", {}, item.flags.length
        ? el("span", { class: "flag-mark", text: `⚑ ${item.flags.map((f) => f.replace(/_/g, " ")).join(", ")}` }) : "") : null));
    return el("details", { class: "table-box", open: true }, el("summary", { text: "Table" }),
      el("table", { class: "data" }, el("thead", {}, head), el("tbody", {}, body)));
  }

  // -- grid ---------------------------------------------------------------------------------
  const FILTER_KEYS = ["label", "group", "prediction", "target", "correct", "pointing",
    "score_min", "score_max", "energy_min", "energy_max", "q"];

  function gridQuery(params, source) {
    const query = new URLSearchParams({ source });
    for (const key of [...FILTER_KEYS, "sort", "order"]) {
      for (const value of params.getAll(key)) if (value !== "") query.append(key, value);
    }
    query.set("offset", params.get("offset") || "0");
    query.set("limit", String(PAGE));
    return query;
  }

  function numericColumns() {
    return state.info.columns.filter((c) => c.type === "number" || c.name === "id").map((c) => c.name);
  }

  /** The filter form; changing it rewrites the hash (so back, forward and reload work). */
  function filterForm(view, params, fc, source) {
    const form = el("form", { class: "filters", id: "filters", autocomplete: "off" });
    form.addEventListener("submit", (event) => event.preventDefault());
    const field = (label, control) => el("label", { class: "field" }, el("span", { text: label }), control);
    const update = () => {
      const next = new URLSearchParams();
      if (source !== "0") next.set("source", source);
      for (const control of form.querySelectorAll("[name]")) {
        if (control.value !== "") next.set(control.name, control.value);
      }
      go(view, next, typing);
    };
    let typing = false;  // a search being typed replaces the history entry, not one per key
    const search = el("input", { type: "search", name: "q", id: "q", placeholder: "id or file contains…", value: params.get("q") || "" });
    let timer = 0;
    // Typed values (the search, the ranges) apply after a pause in typing.
    form.addEventListener("input", (event) => {
      if (event.target.tagName !== "INPUT") return;
      clearTimeout(timer);
      timer = setTimeout(() => { typing = true; update(); typing = false; }, 350);
    });
    form.append(field("Search", search));
    for (const [key, label] of FACETS) {
      if (!fc[key] || (key === "target" && fc.prediction)) continue;  // an audit's target is its prediction
      const select = el("select", { name: key, id: `f-${key}` }, el("option", { value: "", text: "any" }),
        fc[key].map(([value, n]) => {
          const v = value === null ? NULL : String(value);
          const shown = key === "prediction" || key === "target" ? className(source, value) : value === null ? "(none)" : String(value);
          return el("option", { value: v, selected: params.get(key) === v, text: `${short(shown, 40)} (${n})` });
        }));
      form.append(field(label, select));
    }
    const choice = (name, label, options) => {
      const select = el("select", { name, id: `f-${name}` },
        options.map(([value, text]) => el("option", { value, selected: (params.get(name) || "") === value, text })));
      form.append(field(label, select));
    };
    if (hasColumn("correct")) choice("correct", "Prediction is", [["", "any"], ["true", "correct"], ["false", "wrong"]]);
    if (hasColumn("pointing_game")) choice("pointing", "Pointing game", [["", "any"], ["hit", "hit"], ["miss", "miss"]]);
    const ranges = fc.ranges || {};
    const range = (label, prefix, bounds) => {
      const step = "any";
      const lo = el("input", { type: "number", step, name: `${prefix}_min`, id: `f-${prefix}_min`, value: params.get(`${prefix}_min`) || "",
        placeholder: bounds ? fmt(bounds[0]) : "min", "aria-label": `${label} from` });
      const hi = el("input", { type: "number", step, name: `${prefix}_max`, id: `f-${prefix}_max`, value: params.get(`${prefix}_max`) || "",
        placeholder: bounds ? fmt(bounds[1]) : "max", "aria-label": `${label} to` });
      form.append(el("div", { class: "field" }, el("span", { text: label }), el("div", { class: "pair" }, lo, el("span", { text: "to" }), hi)));
    };
    const scoreRange = ranges.prediction_score || ranges.score;
    if (scoreRange) range("Score", "score", scoreRange);
    if (ranges.energy_in_box) range("Energy in box", "energy", ranges.energy_in_box);
    const sort = el("select", { name: "sort", id: "f-sort" }, el("option", { value: "", text: "index (file order)" }),
      numericColumns().filter((c) => c !== "index").map((c) => el("option", { value: c, selected: params.get("sort") === c, text: c })));
    const order = el("select", { name: "order", id: "f-order" },
      el("option", { value: "", text: "ascending" }),
      el("option", { value: "desc", selected: params.get("order") === "desc", text: "descending" }));
    form.append(field("Sort by", sort), field("Order", order));
    form.addEventListener("change", (event) => {
      if (event.target.tagName === "INPUT") return;
      update();
    });
    const reset = el("button", { type: "button", class: "secondary", id: "reset", text: "Clear filters" });
    reset.addEventListener("click", () => go(view, source !== "0" ? new URLSearchParams({ source }) : new URLSearchParams()));
    form.append(reset);
    return form;
  }

  function pager(total, offset, count, onPage) {
    const first = total ? offset + 1 : 0;
    const last = offset + count;
    const prev = el("button", { type: "button", class: "secondary", id: "prev-page", disabled: offset <= 0, text: "← Previous" });
    const next = el("button", { type: "button", class: "secondary", id: "next-page", disabled: last >= total, text: "Next →" });
    prev.addEventListener("click", () => onPage(Math.max(0, offset - PAGE)));
    next.addEventListener("click", () => onPage(offset + PAGE));
    return el("div", { class: "pager" },
      el("span", { class: "range", "data-total": total, text: `rows ${first.toLocaleString()}–${last.toLocaleString()} of ${total.toLocaleString()}` }),
      el("span", { class: "spacer" }), prev, next);
  }

  // A page of a list (grid or compare): remember it for the detail's previous/next, clear the
  // results box and put a pager on top; pagerHere() makes another (for the bottom) that keeps
  // the list's filters.
  function listPage(view, params, source, page, selector) {
    state.list = { view, params: new URLSearchParams(params), source, offset: page.offset, total: page.total,
      ids: page.rows.map((r) => r.id) };
    const onPage = (offset) => {
      const next = new URLSearchParams(params);
      if (offset) next.set("offset", String(offset));
      else next.delete("offset");
      go(view, next);
    };
    const pagerHere = () => pager(page.total, page.offset, page.rows.length, onPage);
    const results = clear($(selector));
    results.append(pagerHere());
    return { results, pagerHere };
  }

  function badge(text, kind, title) {
    return el("span", { class: `badge ${kind}`, title, text });
  }

  function rowBadges(row) {
    const out = [];
    if (row.correct === true) out.push(badge("✓ correct", "good"));
    if (row.correct === false) out.push(badge("✗ wrong", "bad"));
    if (row.pointing_game === true) out.push(badge("hit", "good", "pointing game: the map's peak is in the box"));
    if (row.pointing_game === false) out.push(badge("miss", "bad", "pointing game: the map's peak is outside the box"));
    return out;
  }

  /** A thumbnail that becomes a note when its file is missing (an audit copied without overlays/). */
  function thumbnail(src, alt, size) {
    if (!src) return el("div", { class: "no-thumb", text: "no overlay" });
    const img = el("img", { src, alt, loading: "lazy", width: size, height: size });
    img.addEventListener("error", () => img.replaceWith(el("div", { class: "no-thumb", text: "overlay file not found" })), { once: true });
    return img;
  }

  function card(row, source) {
    const score = row.prediction_score !== undefined ? row.prediction_score : row.score;
    const thumb = thumbnail(row.thumb, `overlay of ${row.id}`, 160);
    const label = row.label !== undefined ? row.label : null;
    return el("a", { class: "card", href: detailHref(source, row.id), dataset: { id: row.id } },
      el("div", { class: "thumb" }, thumb),
      el("div", { class: "card-body" },
        el("div", { class: "card-id", title: row.id, text: row.id }),
        el("div", { class: "card-classes" },
          label !== null ? el("span", { class: "label", title: label === null ? "(none)" : label, text: short(label === null ? "(none)" : label, 28) }) : null,
          label !== null ? el("span", { class: "muted", text: " → " }) : null,
          el("span", { class: "prediction", title: row.display_prediction ?? "", text: short(row.display_prediction ?? "—", 28) })),
        el("div", { class: "card-meta" }, rowBadges(row),
          el("span", { class: "metric", title: "score", text: `score ${fmt(score)}` }),
          row.energy_in_box !== undefined && row.energy_in_box !== null
            ? el("span", { class: "metric", title: "energy in box", text: `EiB ${fmt(row.energy_in_box)}` }) : null)));
  }

  async function grid(token, params) {
    const source = params.get("source") || "0";
    // The facets (the filters' choices) and the page are asked for at once.
    const query = gridQuery(params, source);
    const [fc, page] = await Promise.all([facets(source), api("/api/rows", query)]);
    if (stale(token)) return;
    const key = `grid:${source}`;
    if (state.mounted !== key || !$("#grid-results")) {
      setView(
        el("div", { class: "toolbar" }, el("h1", { text: "Grid" }), sourcePicker(params, "grid")),
        el("div", { class: "grid-layout" },
          el("aside", { class: "sidebar" }, filterForm("grid", params, fc, source)),
          el("section", { class: "results", id: "grid-results" })));
      state.mounted = key;
    } else {
      syncForm(params);
    }
    const { results, pagerHere } = listPage("grid", params, source, page, "#grid-results");
    if (!page.rows.length) {
      results.append(el("p", { class: "empty", text: "No rows match these filters." }));
    }
    results.append(el("div", { class: "cards-grid", id: "cards" }, page.rows.map((row) => card(row, source))));
    if (page.rows.length > 12) results.append(pagerHere());
  }

  function syncForm(params) {
    for (const control of document.querySelectorAll("#filters [name]")) {
      if (control === document.activeElement && control.name === "q") continue;
      control.value = params.get(control.name) || "";
    }
  }

  // -- detail -------------------------------------------------------------------------------
  function stage(image, layer, box, mask, width, height, idPrefix) {
    const base = image
      ? el("img", { src: image, alt: "the image", class: "base", id: idPrefix ? `${idPrefix}-image` : null })
      : el("div", { class: "base placeholder", text: "no image" });
    const holder = el("div", { class: "stage" }, base);
    if (!image && width && height) holder.style.aspectRatio = `${width} / ${height}`;
    if (layer) holder.append(el("img", { src: layer, alt: "the map", class: "layer map", id: idPrefix ? `${idPrefix}-map` : null }));
    if (mask) holder.append(el("img", { src: mask, alt: "the mask", class: "layer mask", id: idPrefix ? `${idPrefix}-mask` : null }));
    if (box && width && height) {
      const rect = el("div", { class: "box", id: idPrefix ? `${idPrefix}-box` : null, title: `box ${box.map(fmt).join(", ")}` });
      rect.style.left = `${(100 * box[0]) / width}%`;
      rect.style.top = `${(100 * box[1]) / height}%`;
      rect.style.width = `${(100 * (box[2] - box[0])) / width}%`;
      rect.style.height = `${(100 * (box[3] - box[1])) / height}%`;
      holder.append(rect);
    }
    return holder;
  }

  function rowTable(row, id) {
    const skip = new Set(["thumb"]);
    return el("table", { class: "data kv", id },
      el("tbody", {}, Object.entries(row).filter(([k]) => !skip.has(k)).map(([k, v]) =>
        el("tr", {}, el("th", { text: k }), el("td", { class: typeof v === "number" ? "num" : "", text: fmt(v) })))));
  }

  async function detail(token, source, id) {
    const data = await api("/api/row", new URLSearchParams({ source, id }));
    if (stale(token)) return;
    const row = data.row;
    const info = sourceInfo(source);
    // Without the original image (moved, or an audit copied elsewhere) the stored overlay,
    // which already holds the map, is shown instead, with a note saying why.
    const layer = data.image ? data.map || data.overlay : (data.overlay ? null : data.map);
    const image = data.image || data.overlay;
    const view = stage(image, layer, data.box, data.mask, data.width, data.height, "detail");
    const opacity = el("input", { type: "range", id: "opacity", min: 0, max: 100, value: 60, "aria-label": "map opacity" });
    const opacityText = el("output", { id: "opacity-value", text: "60%" });
    const setOpacity = () => {
      for (const node of document.querySelectorAll(".stage .layer.map")) node.style.opacity = String(opacity.value / 100);
      opacityText.textContent = `${opacity.value}%`;
    };
    opacity.addEventListener("input", setOpacity);
    const toggles = [];
    const toggle = (label, selector, idName) => {
      const box = el("input", { type: "checkbox", id: idName, checked: true });
      box.addEventListener("change", () => {
        for (const node of document.querySelectorAll(selector)) node.hidden = !box.checked;
      });
      toggles.push(el("label", { class: "inline" }, box, ` ${label}`));
    };
    if (data.box) toggle("box", ".stage .box", "show-box");
    if (data.mask) toggle("mask", ".stage .mask", "show-mask");
    const others = (data.others || []).map((o) => el("figure", { class: "other" },
      stage(data.image || o.overlay, data.image ? o.map : (o.overlay ? null : o.map), data.box, null, data.width, data.height, null),
      el("figcaption", {},
        el("a", { href: detailHref(o.source, row.id), text: `${"AB"[o.source] || o.source}: ${o.name}` }),
        el("span", { class: "muted", text: [o.method, o.layer && `layer ${o.layer}`].filter(Boolean).join(" · ") }),
        el("div", { class: "card-meta" }, rowBadges(o.row),
          el("span", { class: "metric", text: `pred ${short(o.row.display_prediction ?? "—", 24)}` }),
          el("span", { class: "metric", text: `score ${fmt(o.row.prediction_score ?? o.row.score)}` })))));
    const nav = detailNav(source, row.id);
    const title = el("h1", { class: "detail-id", id: "detail-id", title: row.id, text: row.id });
    const summary = el("div", { class: "card-meta big" }, rowBadges(row),
      row.label !== undefined ? el("span", { class: "metric" }, "class ", el("b", { text: row.label ?? "(none)" })) : null,
      el("span", { class: "metric" }, row.prediction !== undefined ? "prediction " : "target ",
        el("b", { id: "detail-prediction", text: row.display_prediction ?? "—" })),
      row.group !== undefined ? el("span", { class: "metric" }, "group ", el("b", { text: row.group ?? "(none)" })) : null);
    setView(
      el("div", { class: "toolbar" }, el("a", { href: backHref(source), class: "button secondary", id: "back", text: "← Grid" }),
        title, el("span", { class: "spacer" }), nav),
      summary,
      data.image_missing ? el("p", { class: "muted", id: "image-missing",
        text: `The original image is not at ${data.image_missing}; ${data.overlay ? "showing the stored overlay" : "showing the map alone"}.` }) : null,
      el("div", { class: `detail-layout${others.length ? " with-others" : ""}` },
        el("div", { class: "detail-main" },
          el("figure", { class: "main-figure" }, view,
            el("figcaption", { class: "muted small", text: [state.info.sources.length > 1 ? `${"AB"[source]}: ${info.name}` : info.name,
              info.method, info.layer && `layer ${info.layer}`, data.width && `${data.width}×${data.height} px`].filter(Boolean).join(" · ") })),
          el("div", { class: "controls" },
            layer ? el("label", { class: "inline", for: "opacity" }, "Map opacity ", opacity, " ", opacityText) : null,
            toggles)),
        others.length ? el("section", { class: "detail-others" }, el("h2", { text: "Same id, other audit" }),
          el("div", { class: "others", id: "others" }, others)) : null,
        el("div", { class: "detail-side" }, el("h2", { text: "Row" }), rowTable(row, "detail-row"))));
    setOpacity();
  }

  function backHref(source) {
    if (state.list && state.list.source === source) {
      const q = state.list.params.toString();
      return `#/${state.list.view}${q ? `?${q}` : ""}`;
    }
    return source !== "0" ? `#/grid?source=${source}` : "#/grid";
  }

  function detailNav(source, id) {
    const list = state.list;
    const at = list && list.source === source ? list.ids.indexOf(id) : -1;
    if (at < 0) return null;
    const position = list.offset + at;
    const step = async (delta) => {
      const target = position + delta;
      if (target < 0 || target >= list.total) return;
      if (target >= list.offset && target < list.offset + list.ids.length) {
        location.hash = detailHref(source, list.ids[target - list.offset]);
        return;
      }
      const offset = Math.floor(target / PAGE) * PAGE;
      const params = new URLSearchParams(list.params);
      if (offset) params.set("offset", String(offset));
      else params.delete("offset");
      try {
        const page = await api("/api/rows", gridQuery(params, source));
        state.list = { ...list, params, offset: page.offset, ids: page.rows.map((r) => r.id), total: page.total };
        const next = state.list.ids[target - page.offset];
        if (next !== undefined) location.hash = detailHref(source, next);
      } catch (err) {
        showError(err);
      }
    };
    const prev = el("button", { type: "button", class: "secondary", id: "prev-row", disabled: position <= 0, text: "← Previous" });
    const next = el("button", { type: "button", class: "secondary", id: "next-row", disabled: position + 1 >= list.total, text: "Next →" });
    prev.addEventListener("click", () => step(-1));
    next.addEventListener("click", () => step(1));
    return el("div", { class: "row-nav" }, el("span", { class: "muted", id: "row-position",
      text: `${(position + 1).toLocaleString()} of ${list.total.toLocaleString()}` }), prev, next);
  }

  // -- compare ------------------------------------------------------------------------------
  async function compare(token, params) {
    const query = gridQuery(params, "0");
    query.delete("source");
    query.set("changed", params.get("changed") || "any");
    const [fc, page] = await Promise.all([facets("0"), api("/api/compare", query)]);
    if (stale(token)) return;
    if (state.mounted !== "compare" || !$("#compare-results")) {
      const changed = el("select", { name: "changed", id: "f-changed" },
        [["any", "prediction or pointing changed"], ["prediction", "prediction changed"],
          ["pointing", "pointing changed"], ["unchanged", "unchanged"], ["all", "every id in both"]]
          .map(([value, text]) => el("option", { value, selected: (params.get("changed") || "any") === value, text })));
      const form = filterForm("compare", params, fc, "0");
      form.prepend(el("label", { class: "field" }, el("span", { text: "Show" }), changed));
      setView(
        el("div", { class: "toolbar" }, el("h1", { text: "Compare" }),
          el("span", { class: "muted", text: `A: ${sourceInfo(0).name} · B: ${sourceInfo(1).name}` })),
        el("div", { class: "cards", id: "compare-counts" }),
        el("div", { class: "grid-layout" },
          el("aside", { class: "sidebar" }, form),
          el("section", { class: "results", id: "compare-results" })));
      state.mounted = "compare";
    } else syncForm(params);
    const c = page.counts;
    const counts = clear($("#compare-counts"));
    for (const [key, label] of [["both", "In both"], ["prediction_changed", "Prediction changed"],
      ["pointing_changed", "Pointing changed"], ["only_a", `Only in A (${sourceInfo(0).name})`], ["only_b", `Only in B (${sourceInfo(1).name})`]]) {
      counts.append(el("div", { class: `stat${key.endsWith("changed") && c[key] ? " warn" : ""}`, dataset: { count: key } },
        el("div", { class: "stat-label", text: label }), el("div", { class: "stat-value", text: c[key].toLocaleString() })));
    }
    const { results, pagerHere } = listPage("compare", params, "0", page, "#compare-results");
    if (!page.rows.length) results.append(el("p", { class: "empty", text: "No ids in both audits match." }));
    const side = (row, source) => el("a", { class: "side", href: detailHref(source, row.id) },
      thumbnail(row.thumb, `${"AB"[source]} overlay`, 112),
      el("div", { class: "side-text" },
        el("div", { class: "muted small", text: `${"AB"[source]}: ${sourceInfo(source).name}` }),
        el("div", { class: "prediction", text: short(row.display_prediction ?? "—", 28) }),
        el("div", { class: "card-meta" }, rowBadges(row),
          el("span", { class: "metric", text: `score ${fmt(row.prediction_score ?? row.score)}` }))));
    results.append(el("div", { class: "compare-list", id: "compare-rows" }, page.rows.map((item) =>
      el("div", { class: "compare-row", dataset: { id: item.id, changed: item.changed.join(" ") } },
        el("div", { class: "compare-head" },
          el("span", { class: "card-id", title: item.id, text: item.id }),
          item.a.label !== undefined ? el("span", { class: "muted", text: ` · class ${short(item.a.label ?? "(none)", 30)}` }) : null,
          el("span", { class: "spacer" }),
          item.changed.length ? item.changed.map((what) => badge(`${what} changed`, "warn")) : badge("unchanged", "neutral")),
        el("div", { class: "compare-sides" }, side(item.a, 0), side(item.b, 1))))));
    if (page.rows.length > 6) results.append(pagerHere());
  }

  // -- training -----------------------------------------------------------------------------
  async function training(token) {
    const data = await api("/api/training");
    if (stale(token)) return;
    const steps = data.steps;
    const players = [];
    const all = el("input", { type: "range", id: "epoch-all", min: 0, max: Math.max(0, steps.length - 1), value: Math.max(0, steps.length - 1),
      "aria-label": "epoch of every sample", list: "epoch-ticks" });
    const ticks = el("datalist", { id: "epoch-ticks" }, steps.map((step, i) => el("option", { value: i, label: String(step) })));
    const allLabel = el("output", { id: "epoch-all-label", text: steps.length ? epochName(steps[steps.length - 1]) : "" });
    all.addEventListener("input", () => {
      allLabel.textContent = epochName(steps[all.value]);
      players.forEach((p) => p.show(Number(all.value)));
    });
    const allPlay = el("button", { type: "button", id: "play-all", class: "primary", text: "▶ Play all" });
    let allTimer = 0;
    allPlay.addEventListener("click", () => {
      if (allTimer) {
        clearInterval(allTimer);
        allTimer = 0;
        allPlay.textContent = "▶ Play all";
        return;
      }
      allPlay.textContent = "❚❚ Pause all";
      allTimer = setInterval(() => {
        all.value = String((Number(all.value) + 1) % steps.length);
        all.dispatchEvent(new Event("input"));
      }, 700);
      state.timers.push(allTimer);
    });
    const samples = data.samples.map((sample, i) => {
      const player = samplePlayer(sample, steps, i);
      players.push(player);
      return player.node;
    });
    setView(
      el("div", { class: "toolbar" }, el("h1", { text: "Training" }),
        el("span", { class: "muted", text: `${data.samples.length} samples · ${steps.length} logged epochs · ${data.tags.join(", ")}` }),
        el("span", { class: "spacer" }),
        steps.length > 1 ? el("div", { class: "epoch-control" }, allPlay, all, allLabel) : null),
      steps.length ? null : el("p", { class: "empty", text: "The log holds no images yet." }),
      el("div", { class: "samples", id: "samples" }, samples), ticks);
  }

  /** The loggers log after an epoch with step = the epoch counted from 0 (Keras counts from 1). */
  function epochName(step) {
    return `epoch ${Number(step) + 1}`;
  }

  function samplePlayer(sample, steps, index) {
    const order = { cam: 0, features: 1, other: 2 };
    const tracks = [...sample.tracks].sort((a, b) => order[a.kind] - order[b.kind]);
    // Preload every frame, so that playing does not flicker.
    for (const track of tracks) for (const url of Object.values(track.frames)) if (url) new Image().src = url;
    const frames = tracks.map((track) => {
      const img = el("img", { class: "frame", alt: `${track.tag} of ${sample.name}`, dataset: { tag: track.tag, kind: track.kind } });
      const missing = el("div", { class: "no-thumb", hidden: true, text: "not logged at this epoch" });
      return { track, img, missing, node: el("figure", { class: `track ${track.kind}` }, img, missing,
        el("figcaption", { text: track.kind === "features" ? `feature maps · ${track.tag.replace(/^features\//, "")}` : track.tag })) };
    });
    const slider = el("input", { type: "range", class: "epoch", min: 0, max: Math.max(0, steps.length - 1), value: Math.max(0, steps.length - 1),
      "aria-label": `epoch of ${sample.name}`, list: "epoch-ticks" });
    const label = el("output", { class: "epoch-label" });
    const play = el("button", { type: "button", class: "secondary play", text: "▶ Play" });
    let timer = 0;
    const show = (at) => {
      slider.value = String(at);
      const step = steps[at];
      label.textContent = epochName(step);
      label.title = `step ${step} in log.json`;
      for (const f of frames) {
        const url = f.track.frames[String(step)];
        f.img.hidden = !url;
        f.missing.hidden = Boolean(url);
        if (url && f.img.getAttribute("src") !== url) f.img.setAttribute("src", url);
      }
    };
    slider.addEventListener("input", () => show(Number(slider.value)));
    play.addEventListener("click", () => {
      if (timer) {
        clearInterval(timer);
        timer = 0;
        play.textContent = "▶ Play";
        play.setAttribute("aria-pressed", "false");
        return;
      }
      if (Number(slider.value) >= steps.length - 1) show(0);
      play.textContent = "❚❚ Pause";
      play.setAttribute("aria-pressed", "true");
      timer = setInterval(() => show((Number(slider.value) + 1) % steps.length), 700);
      state.timers.push(timer);
    });
    if (steps.length) show(steps.length - 1);
    const node = el("article", { class: "sample panel", dataset: { sample: sample.name }, id: `sample-${index}` },
      el("div", { class: "sample-head" }, el("h2", { text: sample.name }), el("span", { class: "spacer" }), label),
      el("div", { class: "tracks" }, frames.map((f) => f.node)),
      steps.length > 1 ? el("div", { class: "epoch-control" }, play, slider) : null);
    return { node, show };
  }

  // -- start --------------------------------------------------------------------------------
  async function start() {
    window.addEventListener("error", (event) => showError(event.error || event.message));
    window.addEventListener("unhandledrejection", (event) => showError(event.reason));
    try {
      state.info = await api("/api/info");
    } catch (err) {
      clear($("#view")).append(el("p", { class: "empty", text: "interp view could not read /api/info." }));
      showError(err);
      return;
    }
    header();
    window.addEventListener("hashchange", () => { clearErrors(); route(); });
    document.addEventListener("keydown", (event) => {
      if (parseHash().view !== "detail" || event.target.closest("input, select, textarea")) return;
      if (event.key === "ArrowLeft") $("#prev-row")?.click();
      if (event.key === "ArrowRight") $("#next-row")?.click();
    });
    route();
  }

  start();
})();
