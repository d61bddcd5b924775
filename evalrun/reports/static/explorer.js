/* evalrun report.html: the row explorer. No network, no libraries; works from a file: URL.
 *
 * Data: the JSON payload in <script type="application/json" id="explorer-data"> (format 2, see
 * ExplorerSink.write_json in evalrun/reports/explorer.py): texts once each in `strings`, every
 * cell column and table a typed array (little-endian, base64) or a constant. Every text goes into
 * the page through textContent, never as HTML.
 *
 * The view is addressable: the filter state lives in the URL hash,
 *   #explore?model=M&prompt=P&status=correct|wrong|unparsed|error|pending&q=TEXT&row=ROW_ID
 *   #explore?by=prompt&model=M&disagree=A,B[&right=A]
 *   #explore?model=M&prompt=P&flipped=up|down   (rows right in this run only / in the baseline only)
 *   #explore?review=reviewed|overridden   (cells a human reviewed / where the human's score differs
 *                                          from the automatic one; combines with the others)
 * (each value percent-encoded; the two names of `disagree` are encoded separately and joined by
 * a literal comma). Every rendered cell is an element with data-row-id, data-model, data-prompt,
 * data-repeat and data-outcome attributes (and data-review on a reviewed cell); window.evalrunExplorer.matches() lists every match of
 * the current filter, rendered or not.
 */
(function () {
  "use strict";
  var dataEl = document.getElementById("explorer-data");
  var root = document.getElementById("explore");
  if (!dataEl || !root) return;
  var D = JSON.parse(dataEl.textContent);
  if (D.version !== 2) {  // data and viewer are written together; this only guards a hand-edited page
    (document.getElementById("explore-app") || root).textContent = "The row data is in format " + D.version +
      ", which this viewer does not read. results.csv has every cell.";
    return;
  }
  var TYPES = { u8: Uint8Array, i8: Int8Array, u16: Uint16Array, i16: Int16Array, i32: Int32Array,
    f32: Float32Array, f64: Float64Array };
  function typed(spec, n) {
    var T = TYPES[spec.t];
    if (spec.const !== undefined) return new T(n).fill(spec.const === null ? NaN : spec.const);
    var bin = atob(spec.b64), len = bin.length, bytes = new Uint8Array(len);
    for (var i = 0; i < len; i++) bytes[i] = bin.charCodeAt(i);
    return new T(bytes.buffer);
  }
  var N = D.count, S = D.strings, C = {}, T = {};
  Object.keys(D.cells).forEach(function (k) { C[k] = typed(D.cells[k], N); });
  Object.keys(D.tables).forEach(function (k) { T[k] = typed(D.tables[k], 0); });
  var NREQ = T.rq_off.length - 1, NTURN = T.tu_off.length - 1;
  var ROLE_CODES = D.roles.map(function (r) { return r === "prefill" ? "p" : r === "note" ? "n" : r.charAt(0); });
  function turnsOf(q) { return Array.prototype.slice.call(T.rq_turn, T.rq_off[q], T.rq_off[q + 1]); }
  function partsOf(t) { return Array.prototype.slice.call(T.tu_part, T.tu_off[t], T.tu_off[t + 1]); }
  function roleOf(t) { return ROLE_CODES[T.tu_role[t]]; }
  var MODELS = D.models, PROMPTS = D.prompts, OUT = D.outcomes;
  var ANSWERED_MAX = 2; // outcome codes 0 correct, 1 wrong, 2 unparsed are answered
  var PAGE = 100;
  var ICON = ["✓", "✗", "?", "!", "…"];
  var LABEL = ["correct", "wrong", "unparsed", "error", "not sent"];

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function missing(v) { return v === null || v === undefined || v !== v; }
  function fmtInt(v) { return missing(v) || v < 0 ? "—" : Number(v).toLocaleString("en-US"); }
  function fmtCost(v) {
    if (missing(v)) return "—";
    return "$" + (v < 0.01 ? v.toPrecision(2) : v.toFixed(4));
  }
  function fmtSec(v) { return missing(v) ? "—" : v.toFixed(2) + " s"; }

  // ---- state and the URL hash ---------------------------------------------------------------
  var KEYS = ["model", "prompt", "status", "review", "q", "row", "by", "disagree", "right", "flipped"];
  var state = blank();
  function blank() { var s = {}; KEYS.forEach(function (k) { s[k] = ""; }); s.a = ""; s.b = ""; return s; }
  function dec(v) { try { return decodeURIComponent(v.replace(/\+/g, "%20")); } catch (e) { return v; } }
  function enc(v) { return encodeURIComponent(v); }

  function parseHash(hash) {
    if (hash.indexOf("#explore") !== 0) return null;
    var rest = hash.slice("#explore".length);
    if (rest && rest.charAt(0) !== "?") return null;
    var s = blank();
    rest.slice(1).split("&").forEach(function (pair) {
      if (!pair) return;
      var at = pair.indexOf("=");
      var key = dec(at < 0 ? pair : pair.slice(0, at));
      var raw = at < 0 ? "" : pair.slice(at + 1);
      if (key === "disagree") {
        var names = raw.split(",").map(dec);
        if (names.length === 2) { s.a = names[0]; s.b = names[1]; }
      } else if (KEYS.indexOf(key) >= 0) {
        s[key] = dec(raw);
      }
    });
    if (s.a && s.b && !s.by) s.by = PROMPTS.indexOf(s.a) >= 0 && PROMPTS.indexOf(s.b) >= 0 ? "prompt" : "model";
    return s;
  }
  function hashOf(s) {
    var parts = [];
    if (s.a && s.b) parts.push("by=" + enc(s.by));
    ["model", "prompt", "status", "review", "q", "row", "flipped"].forEach(function (k) { if (s[k]) parts.push(k + "=" + enc(s[k])); });
    if (s.a && s.b) {
      parts.push("disagree=" + enc(s.a) + "," + enc(s.b));
      if (s.right) parts.push("right=" + enc(s.right));
    }
    return "#explore" + (parts.length ? "?" + parts.join("&") : "");
  }

  // ---- the controls -------------------------------------------------------------------------
  var form = el("form", "filters");
  form.setAttribute("role", "search");
  form.addEventListener("submit", function (ev) { ev.preventDefault(); });
  function control(label, input) {
    var wrap = el("label", "ctl");
    wrap.appendChild(el("span", "ctl-name", label));
    wrap.appendChild(input);
    form.appendChild(wrap);
    return input;
  }
  function select(name, options) {
    var s = el("select");
    s.name = name;
    options.forEach(function (o) {
      var opt = el("option", null, o[1]);
      opt.value = o[0];
      s.appendChild(opt);
    });
    return s;
  }
  function named(list, all) { return [["", all]].concat(list.map(function (n) { return [n, n]; })); }
  var selModel = control("Model", select("model", named(MODELS, "all models")));
  var selPrompt = control("Prompt", select("prompt", named(PROMPTS, "all prompts")));
  var selStatus = control("Outcome", select("status", [["", "all outcomes"], ["correct", "correct"],
    ["wrong", "wrong"], ["unparsed", "unparsed (no answer found)"], ["error", "error (no reply)"],
    ["pending", "not sent"]]));
  // Human reviews (`evalrun view`): C.h is 0 none, 1 reviewed, 2 reviewed and scored otherwise
  // than the automatic scorer. The control shows only when the run has a review.
  var REVIEW_CODE = { reviewed: 1, overridden: 2 };
  var H = C.h || new Int32Array(N);
  var anyReview = H.some(function (h) { return h > 0; });
  var selReview = null;
  if (anyReview) {
    selReview = control("Review", select("review", [["", "all cells"], ["reviewed", "reviewed by a human"],
      ["overridden", "human and automatic score differ"]]));
  }
  var txt = el("input");
  txt.type = "search"; txt.name = "q"; txt.placeholder = "request, reply, answer, error, row id";
  control("Search", txt);
  var byOptions = [];
  if (PROMPTS.length > 1) byOptions.push(["prompt", "prompts"]);
  if (MODELS.length > 1) byOptions.push(["model", "models"]);
  var selBy = null, selA = null, selB = null, selRight = null;
  if (byOptions.length) {
    var box = el("fieldset", "disagree");
    box.appendChild(el("legend", null, "Where two variants disagree (one right, the other wrong)"));
    form.appendChild(box);
    var add = function (label, input) {
      var w = el("label", "ctl"); w.appendChild(el("span", "ctl-name", label)); w.appendChild(input); box.appendChild(w);
      return input;
    };
    selBy = add("Compare", select("by", byOptions));
    selA = add("A", select("a", []));
    selB = add("B", select("b", []));
    selRight = add("Show", select("right", []));
  }
  var clear = el("button", "clear", "Clear filters");
  clear.type = "button";
  form.appendChild(clear);

  function fillVariants(by) {
    if (!selA) return;
    var names = by === "model" ? MODELS : PROMPTS;
    [selA, selB].forEach(function (s, i) {
      s.textContent = "";
      var none = el("option", null, "—"); none.value = ""; s.appendChild(none);
      names.forEach(function (n) { var o = el("option", null, n); o.value = n; s.appendChild(o); });
    });
  }
  function fillRight() {
    if (!selRight) return;
    selRight.textContent = "";
    var a = state.a || "A", b = state.b || "B";
    [["", "both directions"], [state.a, a + " right, " + b + " wrong"], [state.b, b + " right, " + a + " wrong"]]
      .forEach(function (o, i) {
        if (i > 0 && !o[0]) return;
        var opt = el("option", null, o[1]); opt.value = o[0]; selRight.appendChild(opt);
      });
  }
  function syncControls() {
    selModel.value = state.model; selPrompt.value = state.prompt; selStatus.value = state.status;
    if (selReview) selReview.value = state.review;
    if (document.activeElement !== txt) txt.value = state.q;
    if (selBy) {
      var by = state.by || byOptions[0][0];
      selBy.value = by;
      fillVariants(by);
      selA.value = state.a; selB.value = state.b;
      fillRight();
      selRight.value = state.right;
    }
    // With a disagreement filter the compared dimension is fixed by A and B.
    var comparing = !!(state.a && state.b);
    selPrompt.disabled = comparing && state.by === "prompt";
    selModel.disabled = comparing && state.by === "model";
  }
  function fromControls() {
    state.model = selModel.value; state.prompt = selPrompt.value; state.status = selStatus.value; state.q = txt.value;
    if (selReview) state.review = selReview.value;
    if (selBy) {
      var by = selBy.value;
      if (by !== state.by) { state.by = by; fillVariants(by); state.a = ""; state.b = ""; state.right = ""; }
      else { state.a = selA.value; state.b = selB.value; state.right = selRight.value; }
      if (state.right && state.right !== state.a && state.right !== state.b) state.right = "";
      if (!(state.a && state.b)) state.right = "";
    }
  }
  var typing = null;
  form.addEventListener("change", function (ev) {
    if (ev.target === txt) return;
    fromControls(); update(true);
  });
  txt.addEventListener("input", function () {
    clearTimeout(typing);
    typing = setTimeout(function () { fromControls(); update(true); }, 150);
  });
  clear.addEventListener("click", function () { state = blank(); update(true); });

  // ---- matching -----------------------------------------------------------------------------
  var lowered = null, turnTexts = null;
  function textHits(q) {
    q = q.toLowerCase();
    if (!lowered) lowered = S.map(function (s) { return s.toLowerCase(); });
    var hit = new Uint8Array(S.length);
    for (var i = 0; i < S.length; i++) if (lowered[i].indexOf(q) >= 0) hit[i] = 1;
    if (!turnTexts) {  // each part's searchable text: its string, an image's path, a URL
      turnTexts = new Int32Array(T.tu_part.length);
      for (var x = 0; x < T.tu_part.length; x++) {
        var p = T.tu_part[x];
        turnTexts[x] = p >= 0 ? p : (T.md_kind[-1 - p] === 0 ? T.md_b[-1 - p] : T.md_a[-1 - p]);
      }
    }
    var turnHit = new Uint8Array(NTURN);
    for (var t = 0; t < NTURN; t++) {
      for (var j = T.tu_off[t]; j < T.tu_off[t + 1]; j++) if (hit[turnTexts[j]]) { turnHit[t] = 1; break; }
    }
    var reqHit = new Uint8Array(NREQ);
    for (var r = 0; r < NREQ; r++) {
      for (var u = T.rq_off[r]; u < T.rq_off[r + 1]; u++) if (turnHit[T.rq_turn[u]]) { reqHit[r] = 1; break; }
    }
    return function (c) {
      return hit[C.r[c]] || hit[C.y[c]] || hit[C.a[c]] || hit[C.t[c]] || hit[C.e[c]] || hit[C.x[c]] ||
        hit[C.g[c]] || (C.q[c] >= 0 && reqHit[C.q[c]]) || false;
    };
  }
  // Rows that flipped against the run's baseline (report section "Compared with the baseline"):
  // #explore?model=M&prompt=P&flipped=up|down keeps the rows right in one run only.
  function flippedRows(s) {
    var node = document.getElementById("baseline-flips"), found = new Set();
    var flips = node ? JSON.parse(node.textContent || "{}") : {};
    Object.keys(flips).forEach(function (key) {
      var mp = key.split("\u0000");
      if ((s.model && mp[0] !== s.model) || (s.prompt && mp[1] !== s.prompt)) return;
      (flips[key][s.flipped] || []).forEach(function (id) { var i = S.indexOf(id); if (i >= 0) found.add(i); });
    });
    return found;
  }
  function cellFilter(s, ignore) {
    var mi = s.model ? MODELS.indexOf(s.model) : -1, pi = s.prompt ? PROMPTS.indexOf(s.prompt) : -1;
    var oi = s.status ? OUT.indexOf(s.status) : -1;
    var text = s.q ? textHits(s.q) : null;
    var row = s.row ? S.indexOf(s.row) : -1;
    var flips = s.flipped ? flippedRows(s) : null;
    var hi = s.review ? (REVIEW_CODE[s.review] || -1) : 0;
    var none = (s.model && mi < 0) || (s.prompt && pi < 0) || (s.row && row < 0) || (s.status && oi < 0) || hi < 0;
    return function (c) {
      if (none) return false;
      if (mi >= 0 && ignore !== "model" && C.m[c] !== mi) return false;
      if (pi >= 0 && ignore !== "prompt" && C.p[c] !== pi) return false;
      if (oi >= 0 && C.o[c] !== oi) return false;
      if (hi === 1 && H[c] === 0) return false;
      if (hi === 2 && H[c] !== 2) return false;
      if (row >= 0 && C.r[c] !== row) return false;
      if (flips && !flips.has(C.r[c])) return false;
      if (text && !text(c)) return false;
      return true;
    };
  }
  var pairIndex = null;
  var K = 1;
  for (var ki = 0; ki < N; ki++) if (C.k[ki] >= K) K = C.k[ki] + 1;
  function pairKey(r, k, m, p) { return ((r * K + k) * MODELS.length + m) * PROMPTS.length + p; }
  function partnerOf(c, by, other) {
    if (!pairIndex) {
      pairIndex = new Map();
      for (var i = 0; i < N; i++) pairIndex.set(pairKey(C.r[i], C.k[i], C.m[i], C.p[i]), i);
    }
    var m = by === "model" ? other : C.m[c], p = by === "prompt" ? other : C.p[c];
    var found = pairIndex.get(pairKey(C.r[c], C.k[c], m, p));
    return found === undefined ? -1 : found;
  }
  // A disagreement, counted as the comparison table counts it: a dataset row (with the same model
  // when prompts are compared, the same prompt when models are) that A and B both answered, every
  // answered repeat of one right and every one of the other wrong. A row whose repeats are mixed
  // on a side is not one (the table does not count it either). A row's cells are shown in pairs:
  // the same repeat asked of A and of B.
  function disagreements(s) {
    var list = s.by === "model" ? MODELS : PROMPTS;
    var ia = list.indexOf(s.a), ib = list.indexOf(s.b);
    var out = { pairs: [], aRight: 0, bRight: 0, mixed: 0 };
    if (ia < 0 || ib < 0 || ia === ib) return out;
    var pass = cellFilter({ model: s.by === "prompt" ? s.model : "", prompt: s.by === "model" ? s.prompt : "",
      status: "", q: "", row: s.row });
    var col = s.by === "model" ? C.m : C.p, fixed = s.by === "model" ? C.p : C.m;
    var rows = new Map(), order = [];
    for (var c = 0; c < N; c++) {
      if ((col[c] !== ia && col[c] !== ib) || C.o[c] > ANSWERED_MAX || !pass(c)) continue;
      var key = C.r[c] + ":" + fixed[c], g = rows.get(key);
      if (!g) { g = { a: [0, 0], b: [0, 0], pairs: [] }; rows.set(key, g); order.push(g); }
      var side = col[c] === ia ? g.a : g.b;
      side[0] += C.o[c] === 0 ? 1 : 0;
      side[1] += 1;
      if (col[c] !== ia) continue;
      var d = partnerOf(c, s.by, ib);
      if (d >= 0 && C.o[d] <= ANSWERED_MAX) g.pairs.push([c, d]);
    }
    var text = s.q ? textHits(s.q) : null, oi = s.status ? OUT.indexOf(s.status) : -1;
    order.forEach(function (g) {
      if (!g.a[1] || !g.b[1]) return;
      var ra = g.a[0] / g.a[1], rb = g.b[0] / g.b[1];
      var aRight = ra === 1 && rb === 0, bRight = ra === 0 && rb === 1;
      if (!aRight && !bRight) { if (ra !== rb) out.mixed++; return; }
      if (text && !g.pairs.some(function (p) { return text(p[0]) || text(p[1]); })) return;
      if (oi >= 0 && !g.pairs.some(function (p) { return C.o[p[0]] === oi || C.o[p[1]] === oi; })) return;
      if (aRight) out.aRight++; else out.bRight++;
      if ((s.right === s.a && !aRight) || (s.right === s.b && !bRight)) return;
      g.pairs.forEach(function (p) { out.pairs.push(p); });
    });
    return out;
  }

  // ---- rendering ----------------------------------------------------------------------------
  var list = el("div", "ex-list");
  list.setAttribute("role", "list");
  var summary = el("p", "ex-count");
  summary.setAttribute("aria-live", "polite");
  var more = el("button", "more", "Show more");
  more.type = "button";
  var host = document.getElementById("explore-app") || root;
  host.appendChild(form);
  host.appendChild(summary);
  host.appendChild(list);
  host.appendChild(more);
  var items = [], shown = 0, current = null;

  function str(i) { return S[i] || ""; }
  function requestPrefill(c) {
    var q = C.q[c];
    if (q < 0) return "";
    var turns = turnsOf(q), last = turns[turns.length - 1];
    if (last !== undefined && roleOf(last) === "n") last = turns[turns.length - 2];
    if (last === undefined || roleOf(last) !== "p") return "";
    return partsOf(last).map(function (p) { return p >= 0 ? str(p) : ""; }).join("");
  }
  function cellRow(c, pairRole) {
    var o = C.o[c];
    var item = el("div", "cell oc-" + OUT[o]);
    item.setAttribute("role", "listitem");
    item.setAttribute("data-row-id", str(C.r[c]));
    item.setAttribute("data-model", MODELS[C.m[c]]);
    item.setAttribute("data-prompt", PROMPTS[C.p[c]]);
    item.setAttribute("data-repeat", String(C.k[c]));
    item.setAttribute("data-outcome", OUT[o]);
    if (H[c]) item.setAttribute("data-review", H[c] === 2 ? "overridden" : "reviewed");
    item.setAttribute("data-cell", String(c));
    var line = el("button", "line");
    line.type = "button";
    line.setAttribute("aria-expanded", "false");
    var icon = el("span", "oc", ICON[o]);
    icon.title = LABEL[o] + (H[c] === 2 ? " (a human's score, not the scorer's)" : H[c] ? " (reviewed by a human)" : "");
    line.appendChild(icon);
    if (pairRole) { line.className += " paired"; line.appendChild(el("span", "side", pairRole)); }
    var v = el("span", "var");
    v.appendChild(el("span", "mdl", MODELS[C.m[c]]));
    v.appendChild(el("span", "prm", PROMPTS[C.p[c]]));
    line.appendChild(v);
    var rid = el("span", "rid", str(C.r[c]));
    if (C.k[c] > 0 || D.repeats) rid.appendChild(el("span", "rep", " #" + C.k[c]));
    line.appendChild(rid);
    var ans = el("span", "ans");
    if (o <= ANSWERED_MAX) {
      ans.appendChild(el("b", null, o === 2 ? "no answer" : str(C.a[c]) || "—"));
      ans.appendChild(el("span", "tgt", " · target " + (str(C.t[c]) || "—")));
    } else {
      ans.textContent = o === 3 ? "error" : "not sent";
    }
    line.appendChild(ans);
    var snip = str(o === 3 || o === 4 ? C.e[c] : C.y[c]).replace(/\s+/g, " ");
    line.appendChild(el("span", "snip", snip.length > 160 ? snip.slice(0, 160) + "…" : snip));
    var meta = el("span", "meta", fmtInt(C.it[c]) + "→" + fmtInt(C.ot[c]) + " tok · " + fmtCost(C.c[c]) + " · " +
      fmtSec(C.l[c]));
    line.appendChild(meta);
    item.appendChild(line);
    line.addEventListener("click", function () {
      var open = toggle(item, c);
      // In a pair, open and close both sides together: they are read side by side.
      var pair = item.parentNode;
      if (pair && pair.className === "pair") {
        Array.prototype.forEach.call(pair.children, function (other) {
          if (other !== item) toggle(other, Number(other.getAttribute("data-cell")), open);
        });
      }
    });
    return item;
  }
  function toggle(item, c, want) {
    var line = item.firstChild, detail = item.querySelector(".detail");
    var open = want === undefined ? !(detail && !detail.hidden) : want;
    if (open && !detail) { detail = details(c); item.appendChild(detail); }
    if (detail) detail.hidden = !open;
    line.setAttribute("aria-expanded", open ? "true" : "false");
    return open;
  }
  function block(title, cls) {
    var b = el("section", "blk " + (cls || ""));
    b.appendChild(el("h4", null, title));
    return b;
  }
  function pre(text, cls) { return el("pre", cls || null, text); }
  var ROLE = { s: "system", u: "user", a: "assistant", p: "prefill (the reply continues it)", n: "parameters" };
  var ROLE_CLASS = { s: "system", u: "user", a: "assistant", p: "prefill", n: "note" };
  // Per-field correctness of a fields scorer ("name:1,name:0"): one line per field.
  function fieldRows(dl, text) {
    var pairs = text.split(",").map(function (f) { var at = f.lastIndexOf(":"); return [f.slice(0, at), f.slice(at + 1)]; });
    var right = pairs.filter(function (kv) { return kv[1] === "1"; }).length;
    dl.appendChild(el("dt", null, "fields right"));
    dl.appendChild(el("dd", null, right + " of " + pairs.length));
    pairs.forEach(function (kv) {
      var dt = el("dt", "field", kv[0]);
      var dd = el("dd", kv[1] === "1" ? "field ok" : "field bad", kv[1] === "1" ? "✓ right" : "✗ wrong");
      dl.appendChild(dt); dl.appendChild(dd);
    });
  }
  function details(c) {
    var d = el("div", "detail");
    var req = block("Request", "req");
    var q = C.q[c];
    if (q < 0) req.appendChild(el("p", "note", "The request body is not in the store."));
    else turnsOf(q).forEach(function (tid) {
      var role = roleOf(tid);
      var t = el("div", "turn role-" + (ROLE_CLASS[role] || "note"));
      t.appendChild(el("span", "role", ROLE[role] || role));
      partsOf(tid).forEach(function (p) {
        if (p >= 0) { t.appendChild(pre(str(p))); return; }
        var m = -1 - p;
        if (T.md_kind[m] === 0) {
          var fig = el("figure", "img");
          var data = Object.prototype.hasOwnProperty.call(D.images, str(T.md_a[m])) ? D.images[str(T.md_a[m])] : null;
          var path = str(T.md_b[m]);
          if (data && data.indexOf("data:image/") === 0) {
            var im = el("img"); im.src = data; im.alt = path; im.loading = "lazy";
            fig.appendChild(im);
          }
          fig.appendChild(el("figcaption", null, path + (data ? "" : " (image not embedded: too large, or the file changed)")));
          t.appendChild(fig);
          return;
        }
        if (T.md_kind[m] === 2) {  // a document: its name, page count and type, as a link
          var doc = el("p", "imgurl", "document: "), href = str(T.md_b[m]);
          var da = el(/^(https?|file):\/\//i.test(href) ? "a" : "span", null, str(T.md_a[m]));
          if (da.tagName === "A") { da.href = href; da.rel = "noreferrer noopener"; da.target = "_blank"; }
          doc.appendChild(da);
          t.appendChild(doc);
          return;
        }
        var url = str(T.md_a[m]);
        var wrap = el("p", "imgurl", "image by URL (not fetched): ");
        if (/^https?:\/\//i.test(url)) {
          var a = el("a", null, url); a.href = url; a.rel = "noreferrer noopener"; a.target = "_blank";
          wrap.appendChild(a);
        } else wrap.appendChild(document.createTextNode(url));
        t.appendChild(wrap);
      });
      req.appendChild(t);
    });
    d.appendChild(req);
    var rep = block("Reply", "reply");
    var o = C.o[c];
    if (o === 3 || o === 4) rep.appendChild(pre(str(C.e[c]), "error"));
    else {
      var body = el("pre");
      var prefill = requestPrefill(c);
      if (prefill) body.appendChild(el("span", "prefill", prefill));
      replyParts(str(C.y[c]), rep, body);
    }
    d.appendChild(rep);
    var sc = block("Score", "score");
    var dl = el("dl");
    function row(k, v) { if (v === "" || v === null || v === undefined) return; dl.appendChild(el("dt", null, k)); dl.appendChild(el("dd", null, v)); }
    row("outcome", LABEL[o]);
    row("extracted answer", o <= 1 ? str(C.a[c]) || "—" : o === 2 ? "none found" : "");
    row("target", str(C.t[c]));
    if (!missing(C.sc[c])) row("score", String(Number(C.sc[c].toPrecision(6))));
    if (C.f[c]) fieldRows(dl, str(C.f[c]));
    row("grade", str(C.g[c]));
    row("grader's explanation", str(C.x[c]));
    row("answer mode", str(C.d[c]));
    row("stop reason", str(C.s[c]));
    row("tokens in / out", fmtInt(C.it[c]) + " / " + fmtInt(C.ot[c]));
    if (C.cw[c] > 0 || C.cr[c] > 0) row("cache write / read", fmtInt(C.cw[c]) + " / " + fmtInt(C.cr[c]));
    row("cost", fmtCost(C.c[c]) + (str(C.u[c]) === "cache" ? " (from the shared cache, not paid again)" : ""));
    row("latency", fmtSec(C.l[c]));
    row("attempts", C.n[c] < 0 ? "" : String(C.n[c]));
    if (o !== 3 && o !== 4) row("error", str(C.e[c]));
    sc.appendChild(dl);
    var link = el("a", "permalink", "link to this cell");
    link.href = hashOf({ model: MODELS[C.m[c]], prompt: PROMPTS[C.p[c]], status: "", q: "", row: str(C.r[c]),
      by: "", a: "", b: "", right: "" });
    sc.appendChild(link);
    d.appendChild(sc);
    return d;
  }
  // A reply's thinking blocks (between two U+241E marks) are shown collapsed: never scored.
  function replyParts(text, rep, body) {
    var parts = text.split("\u241e");
    for (var i = 0; i < parts.length; i++) {
      if (i % 2 === 0) { if (parts[i].replace(/^\n+|\n+$/g, "")) body.appendChild(document.createTextNode(parts[i].replace(/^\n+/, ""))); continue; }
      var det = el("details", "thinking");
      det.appendChild(el("summary", null, "thinking (" + parts[i].length.toLocaleString() + " characters shown; not scored)"));
      det.appendChild(pre(parts[i]));
      rep.appendChild(det);
    }
    rep.appendChild(body);
  }
  function renderMore() {
    var frag = document.createDocumentFragment();
    var end = Math.min(items.length, shown + PAGE);
    for (var i = shown; i < end; i++) {
      var it = items[i];
      if (typeof it === "number") frag.appendChild(cellRow(it, ""));
      else {
        var pair = el("div", "pair");
        pair.setAttribute("role", "group");
        pair.appendChild(cellRow(it[0], "A"));
        pair.appendChild(cellRow(it[1], "B"));
        frag.appendChild(pair);
      }
    }
    list.appendChild(frag);
    shown = end;
    more.hidden = shown >= items.length;
    more.textContent = "Show more (" + (items.length - shown).toLocaleString("en-US") + " left)";
    // A link to one row opens its cells (a few: its variants and repeats) at once.
    if (state.row && shown === items.length && items.length <= 8) {
      Array.prototype.forEach.call(list.querySelectorAll(".cell"), function (item) {
        toggle(item, Number(item.getAttribute("data-cell")), true);
      });
    }
  }
  more.addEventListener("click", renderMore);
  if (typeof IntersectionObserver === "function") {
    new IntersectionObserver(function (entries) {
      if (entries[0].isIntersecting && shown < items.length) renderMore();
    }, { rootMargin: "600px" }).observe(more);
  }

  function update(fromUser) {
    if (fromUser) {
      var h = hashOf(state);
      if (location.hash !== h) history.replaceState(null, "", h);
    }
    syncControls();
    var s = state;
    if (s.a && s.b) {
      var res = disagreements(s);
      items = res.pairs;
      var scope = s.by === "prompt" ? (s.model ? " with " + s.model : " within each model")
        : (s.prompt ? " on prompt " + s.prompt : " within each prompt");
      var rowsWord = function (n) { return n.toLocaleString("en-US") + (n === 1 ? " dataset row" : " dataset rows"); };
      summary.textContent = (res.aRight + res.bRight === 0 ? "No dataset row where " + s.a + " and " + s.b + " disagree" + scope
        : rowsWord(res.aRight + res.bRight) + " where " + s.a + " and " + s.b + " disagree" + scope +
          " (the unit the comparison table counts): " + rowsWord(res.aRight) + " with " + s.a + " right and " + s.b +
          " wrong, " + rowsWord(res.bRight) + " the reverse" +
          (s.right ? "; showing the " + (s.right === s.a ? res.aRight : res.bRight).toLocaleString("en-US") +
            " with " + s.right + " right" : "")) +
        (res.mixed ? "; " + rowsWord(res.mixed) + " whose repeats are mixed are not counted" : "") +
        (K > 1 ? ". Each row shows its repeats, A's reply above B's (" + items.length.toLocaleString("en-US") +
          " row × repeat pairs)." : ". Each row shows A's reply above B's.");
    } else {
      var pass = cellFilter(s, "");
      items = [];
      for (var c = 0; c < N; c++) if (pass(c)) items.push(c);
      summary.textContent = items.length.toLocaleString("en-US") + " of " + N.toLocaleString("en-US") +
        " cells" + (items.length < N ? " match" : "") + ". Click a row to read its request and reply.";
    }
    current = s;
    list.textContent = "";
    shown = 0;
    renderMore();
  }

  function fromHash(scroll) {
    var s = parseHash(location.hash);
    if (!s) return false;
    state = s;
    update(false);
    if (scroll) root.scrollIntoView();
    return true;
  }
  window.addEventListener("hashchange", function () { fromHash(true); });
  if (!fromHash(true)) update(false);

  window.evalrunExplorer = {
    state: function () { return JSON.parse(JSON.stringify(state)); },
    hash: function () { return hashOf(state); },
    matches: function () {
      var flat = [];
      items.forEach(function (it) { (typeof it === "number" ? [it] : it).forEach(function (c) { flat.push(c); }); });
      return flat.map(function (c) {
        return { row_id: str(C.r[c]), model: MODELS[C.m[c]], prompt: PROMPTS[C.p[c]], repeat: C.k[c], outcome: OUT[C.o[c]],
          review: ["", "reviewed", "overridden"][H[c]] || "" };
      });
    },
    count: N,
    readyMs: performance.now()
  };
  document.documentElement.setAttribute("data-explorer", "ready");
})();
