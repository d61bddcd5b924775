/* evalrun view: the run list and a run's live box and cells, from the viewer's JSON API.
 *
 * Every text from the API (replies, dataset values, names) goes into the page through
 * textContent, never as HTML. Writes carry the session token (from the ?token= of the address
 * the viewer printed, kept in sessionStorage for this tab) in the X-Evalrun-Token header.
 */
(function () {
  "use strict";
  var TOKEN_KEY = "evalrun-view-token";
  var POLL_MS = 2000;
  var search = new URLSearchParams(location.search);
  if (search.get("token")) {
    sessionStorage.setItem(TOKEN_KEY, search.get("token"));
    search.delete("token");
    var rest = search.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
  }
  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function getJSON(url) {
    return fetch(url, { headers: { Accept: "application/json" } }).then(function (r) {
      return r.json().then(function (d) { if (!r.ok) throw new Error(d.error || String(r.status)); return d; });
    });
  }
  function pct(v) { return v === null || v === undefined || v !== v ? "—" : (100 * v).toFixed(1) + "%"; }
  function usd(v) { return v === null || v === undefined ? "—" : "$" + Number(v).toFixed(4); }
  function path(run) { return run.split("/").map(encodeURIComponent).join("/"); }
  function progress(info) {
    if (info.cells === null || info.cells === undefined) return "—";
    return info.cells_done.toLocaleString("en-US") + " / " + info.cells.toLocaleString("en-US");
  }
  function accuracyList(info) {
    var box = el("div", "acc");
    if (info.problem) { box.textContent = "cannot read it: " + info.problem; return box; }
    if (info.failure) box.appendChild(el("div", "failed", "failed: " + info.failure));
    (info.accuracy || []).forEach(function (a) {
      var line = el("div", "acc-line");
      line.setAttribute("data-model", a.model);
      line.setAttribute("data-prompt", a.prompt);
      line.appendChild(el("span", "mdl", a.model + " · " + a.prompt + ": "));
      var v = el("b", "acc-value", pct(a.accuracy) + (a.reliable ? "" : " ⚠ unreliable"));
      line.appendChild(v);
      box.appendChild(line);
    });
    return box;
  }

  // ---- the run list -------------------------------------------------------------------------
  function listPage(app) {
    var filter = el("input", "filter");
    filter.type = "search"; filter.placeholder = "experiment name"; filter.setAttribute("aria-label", "filter by experiment name");
    var compare = el("a", "compare", "Side by side");
    compare.hidden = true;
    var table = el("table", "runs");
    var trendsBox = el("section", "trends");
    var chosen = [];
    app.textContent = "";
    var bar = el("div", "bar"); bar.appendChild(filter); bar.appendChild(compare);
    app.appendChild(bar); app.appendChild(table); app.appendChild(trendsBox);
    var data = null;
    function render() {
      if (!data) return;
      document.getElementById("root").textContent = data.root;
      var q = filter.value.toLowerCase();
      table.textContent = "";
      var head = el("tr");
      ["", "started", "name", "endpoint", "status", "cells done", "spent", "accuracy (model · prompt)", "run"].forEach(function (h) { head.appendChild(el("th", null, h)); });
      var thead = el("thead"); thead.appendChild(head); table.appendChild(thead);
      var body = el("tbody");
      data.runs.forEach(function (r) {
        if (q && String(r.name || "").toLowerCase().indexOf(q) < 0) return;
        var tr = el("tr", "run");
        tr.setAttribute("data-run", r.run);
        tr.setAttribute("data-status", r.status || "");
        var box = el("input"); box.type = "checkbox"; box.checked = chosen.indexOf(r.run) >= 0;
        box.addEventListener("change", function () {
          chosen = chosen.filter(function (x) { return x !== r.run; });
          if (box.checked) chosen.push(r.run);
          while (chosen.length > 2) chosen.shift();
          updateCompare(); render();
        });
        var td0 = el("td"); td0.appendChild(box); tr.appendChild(td0);
        tr.appendChild(el("td", null, r.started_at ? r.started_at.replace("T", " ").slice(0, 16) : "—"));
        tr.appendChild(el("td", null, r.name || "—"));
        tr.appendChild(el("td", null, r.endpoint || "—"));
        tr.appendChild(el("td", "status", r.problem ? "unreadable" : r.status || "—"));
        tr.appendChild(el("td", "progress", progress(r)));
        tr.appendChild(el("td", null, usd(r.spent_usd)));
        var acc = el("td"); acc.appendChild(accuracyList(r)); tr.appendChild(acc);
        var link = el("a", "open", r.run); link.href = "/runs/" + path(r.run);
        var td = el("td"); td.appendChild(link); tr.appendChild(td);
        body.appendChild(tr);
      });
      table.appendChild(body);
      trendsBox.textContent = "";
      trendsBox.appendChild(el("h2", null, "Trends"));
      Object.keys(data.trends).forEach(function (name) {
        if (q && name.toLowerCase().indexOf(q) < 0) return;
        var runs = data.trends[name];
        var byVariant = {};
        runs.forEach(function (run) {
          run.accuracy.forEach(function (a) {
            var k = a.model + " · " + a.prompt;
            (byVariant[k] = byVariant[k] || []).push(pct(a.accuracy));
          });
        });
        var sec = el("div", "trend");
        sec.appendChild(el("h3", null, name + " (" + runs.length + " runs, oldest first)"));
        Object.keys(byVariant).forEach(function (k) { sec.appendChild(el("div", null, k + ": " + byVariant[k].join(" → "))); });
        trendsBox.appendChild(sec);
      });
    }
    function updateCompare() {
      compare.hidden = chosen.length !== 2;
      if (chosen.length === 2) compare.href = "/diff?a=" + encodeURIComponent(chosen[0]) + "&b=" + encodeURIComponent(chosen[1]);
    }
    filter.addEventListener("input", render);
    function load() {
      getJSON("/api/runs").then(function (d) { data = d; render(); document.documentElement.setAttribute("data-view", "ready"); })
        .catch(function (e) { app.textContent = "Cannot list the runs: " + e.message; })
        .then(function () { setTimeout(load, POLL_MS); });
    }
    load();
  }

  // ---- a run: live box and cells --------------------------------------------------------------
  function runPage(app) {
    var run = app.getAttribute("data-run");
    var grades = JSON.parse(app.getAttribute("data-grades") || "[]");
    var api = "/api/runs/" + path(run);
    var live = document.getElementById("live-box");
    function poll() {
      getJSON(api).then(function (info) {
        live.textContent = "";
        live.setAttribute("data-status", info.status || "");
        var line = el("p", "meta", (info.status || "—") + " · cells done " + progress(info) + " · spent " + usd(info.spent_usd));
        live.appendChild(line);
        if (info.cells) {
          var bar = el("progress"); bar.max = info.cells; bar.value = info.cells_done; live.appendChild(bar);
        }
        live.appendChild(accuracyList(info));
        document.documentElement.setAttribute("data-live", String(info.cells_done));
      }).catch(function (e) { live.textContent = "Cannot read the run: " + e.message; })
        .then(function () { setTimeout(poll, POLL_MS); });
    }
    poll();
    cellsApp(document.getElementById("cells-app"), api, grades);
  }

  function cellsApp(host, api, grades) {
    var state = { offset: 0, limit: 50, model: "", prompt: "", status: "", reviewed: false, disagree: false };
    var form = el("form", "filters");
    form.addEventListener("submit", function (ev) { ev.preventDefault(); });
    function select(name, options) {
      var s = el("select"); s.name = name;
      options.forEach(function (o) { var opt = el("option", null, o[1]); opt.value = o[0]; s.appendChild(opt); });
      var w = el("label", "ctl"); w.appendChild(el("span", "ctl-name", name)); w.appendChild(s); form.appendChild(w);
      return s;
    }
    function check(name, label) {
      var c = el("input"); c.type = "checkbox"; c.name = name;
      var w = el("label", "ctl"); w.appendChild(c); w.appendChild(el("span", null, " " + label)); form.appendChild(w);
      return c;
    }
    var selModel = select("model", [["", "all models"]]);
    var selPrompt = select("prompt", [["", "all prompts"]]);
    var selStatus = select("status", [["", "all outcomes"], ["correct", "correct"], ["wrong", "wrong"],
      ["unparsed", "unparsed"], ["refused", "refused"], ["error", "error"], ["pending", "not sent / not graded"]]);
    var chkReviewed = check("reviewed", "reviewed only");
    var chkDisagree = check("disagree", "human ≠ automatic");
    var count = el("p", "ex-count");
    var list = el("div", "cells");
    var nav = el("div", "pager");
    var prev = el("button", null, "← previous"); prev.type = "button";
    var next = el("button", null, "next →"); next.type = "button";
    nav.appendChild(prev); nav.appendChild(next);
    host.appendChild(form); host.appendChild(count); host.appendChild(list); host.appendChild(nav);
    var filled = false;
    function fill(s, names) {
      if (s.options.length > 1) return;
      names.forEach(function (n) { var o = el("option", null, n); o.value = n; s.appendChild(o); });
    }
    form.addEventListener("change", function () {
      state.model = selModel.value; state.prompt = selPrompt.value; state.status = selStatus.value;
      state.reviewed = chkReviewed.checked; state.disagree = chkDisagree.checked; state.offset = 0;
      load();
    });
    prev.addEventListener("click", function () { state.offset = Math.max(0, state.offset - state.limit); load(); });
    next.addEventListener("click", function () { state.offset += state.limit; load(); });
    function query() {
      var p = new URLSearchParams();
      p.set("offset", state.offset); p.set("limit", state.limit);
      ["model", "prompt", "status"].forEach(function (k) { if (state[k]) p.set(k, state[k]); });
      if (state.reviewed) p.set("reviewed", "1");
      if (state.disagree) p.set("disagree", "1");
      return api + "/cells?" + p.toString();
    }
    function load() {
      getJSON(query()).then(function (d) {
        if (!filled) { fill(selModel, d.models); fill(selPrompt, d.prompts); filled = true; }
        list.textContent = "";
        d.cells.forEach(function (c) { list.appendChild(cellView(c)); });
        var end = state.offset + d.cells.length;
        count.textContent = d.cells.length ? "cells " + (state.offset + 1).toLocaleString("en-US") + "–" + end.toLocaleString("en-US") +
          (d.total !== null ? " of " + d.total.toLocaleString("en-US") : "") : "no cell matches";
        prev.disabled = state.offset === 0; next.disabled = !d.more;
        document.documentElement.setAttribute("data-cells", "ready");
      }).catch(function (e) { count.textContent = "Cannot read the cells: " + e.message; });
    }
    function reviewLine(c) {
      var r = c.review;
      if (!r) return el("p", "review-state", "not reviewed (scored automatically)");
      return el("p", "review-state", "reviewed: " + (r.verdict || "grade " + r.grade) + " by " + r.reviewer + " at " +
        r.created_at + (r.note ? " — " + r.note : "") + (c.correct_auto !== c.correct ? " (the automatic score said " +
        (c.correct_auto === null ? "nothing" : c.correct_auto ? "correct" : "wrong") + ")" : ""));
    }
    function cellView(c) {
      var item = el("div", "cell oc-" + c.outcome);
      item.setAttribute("data-row-id", c.row_id);
      item.setAttribute("data-model", c.model);
      item.setAttribute("data-prompt", c.prompt);
      item.setAttribute("data-repeat", String(c.repeat));
      item.setAttribute("data-outcome", c.outcome);
      item.setAttribute("data-source", c.score_source);
      var head = el("div", "v-line");
      head.appendChild(el("span", "v-oc", c.outcome));
      head.appendChild(el("span", "v-var", c.model + " · " + c.prompt));
      head.appendChild(el("span", "v-rid", c.row_id + " #" + c.repeat));
      head.appendChild(el("span", "v-ans", "answer " + (c.answer || "—") + " · target " + (c.target || "—")));
      var snip = (c.reply || c.error || "").replace(/\s+/g, " ");
      head.appendChild(el("span", "v-snip", snip.length > 120 ? snip.slice(0, 120) + "…" : snip));
      head.appendChild(el("span", "src " + c.score_source, c.score_source === "human" ? "human" : c.score_source));
      item.appendChild(head);
      var d = el("details", "v-detail");
      d.appendChild(el("summary", null, "request, reply and score"));
      (c.request || []).forEach(function (turn) {
        var t = el("div", "turn role-" + turn[0]);
        t.appendChild(el("span", "role", turn[0]));
        (turn[1] || []).forEach(function (part) {
          t.appendChild(el("pre", null, typeof part === "string" ? part : "[" + part.join(" ") + "]"));
        });
        d.appendChild(t);
      });
      d.appendChild(el("h4", null, "Reply"));
      d.appendChild(el("pre", "reply", c.reply || c.error || "—"));
      if (c.grade) d.appendChild(el("p", null, "grader's grade: " + c.grade + (c.grade_explanation ? " — " + c.grade_explanation : "")));
      item.appendChild(d);
      var rv = el("div", "v-review");
      var stateLine = reviewLine(c);
      rv.appendChild(stateLine);
      var note = el("input", "note"); note.type = "text"; note.placeholder = "note (optional)"; note.maxLength = 10000;
      var said = el("span", "said");
      function send(body) {
        body.model = c.model; body.prompt = c.prompt; body.row_id = c.row_id; body.repeat = c.repeat; body.note = note.value;
        said.textContent = "saving…";
        fetch(api + "/reviews", { method: "POST", headers: { "Content-Type": "application/json", "X-Evalrun-Token": token() },
          body: JSON.stringify(body) }).then(function (r) {
          return r.json().then(function (d) {
            if (!r.ok) throw new Error(d.error || String(r.status));
            said.textContent = "saved";
            load();
          });
        }).catch(function (e) { said.textContent = "not saved: " + e.message; });
      }
      if (c.answered) {
        ["correct", "wrong"].forEach(function (v) {
          var b = el("button", "verdict", v === "correct" ? "✓ correct" : "✗ wrong"); b.type = "button";
          b.setAttribute("data-verdict", v);
          b.addEventListener("click", function () { send({ verdict: v }); });
          rv.appendChild(b);
        });
        if (grades.length) {
          var g = el("select", "grade");
          var none = el("option", null, "grade…"); none.value = ""; g.appendChild(none);
          grades.forEach(function (x) { var o = el("option", null, x); o.value = x; g.appendChild(o); });
          g.addEventListener("change", function () { if (g.value) send({ grade: g.value }); });
          rv.appendChild(g);
        }
        rv.appendChild(note);
        rv.appendChild(said);
      }
      item.appendChild(rv);
      return item;
    }
    load();
  }

  var app = document.getElementById("runs-app") || document.getElementById("view-app");
  if (!app) return;
  if (app.getAttribute("data-page") === "list") listPage(app); else runPage(app);
})();
