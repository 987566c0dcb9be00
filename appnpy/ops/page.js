// The node's live page (appnpy/ops/page.py serves it, with the first snapshot
// embedded as JSON).  Plain script, no build step, nothing fetched from
// elsewhere.  Every value goes into the DOM as text (textContent), never as
// markup: names come from peers and plugins.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const csrf = document.querySelector('meta[name="appn-csrf"]').content;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const c of children) node.append(c === null || c === undefined ? "" : String(c));
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function short(nodeID) {
    return nodeID ? nodeID.slice(0, 12) : "";
  }

  function label(name, nodeID) {
    return name || short(nodeID);
  }

  // Fill `table` with a header row and one row per item; `key` names the
  // data attribute each row carries (the browser test finds rows by it).
  function fill(table, headers, items, row, key) {
    const head = el("tr", {});
    for (const h of headers) head.append(el("th", {}, h));
    const rows = [head];
    for (const item of items) {
      const tr = el("tr", key ? { [key[0]]: item[key[1]] } : {});
      for (const cell of row(item)) {
        tr.append(cell instanceof Node ? wrap(cell) : el("td", {}, cell));
      }
      rows.push(tr);
    }
    if (!items.length) rows.push(el("tr", {}, el("td", { colspan: headers.length }, "none")));
    table.replaceChildren(...rows);
  }

  function wrap(node) {
    const td = el("td", {});
    td.append(node);
    return td;
  }

  function rtt(value) {
    return value === null || value === undefined ? "-" : value.toFixed(2) + " ms";
  }

  function renderNode(s) {
    const n = s.node;
    document.getElementById("node-name").textContent = label(n.name, n.node_id);
    document.title = "appnpy " + label(n.name, n.node_id);
    fill(
      document.getElementById("node"),
      ["node ID", "role", "version", "listening on", "uptime"],
      [n],
      (x) => [x.node_id, x.role, x.version, x.listen.join(" "), x.uptime],
    );
  }

  function actions(n) {
    const box = el("span", { class: "actions" });
    const echo = el("button", { type: "button", "data-action": "echo" }, "echo");
    echo.addEventListener("click", () =>
      act("echo", { node: n.node_id, count: 3 }, (r) =>
        r.error
          ? `echo ${label(n.name, n.node_id)}: ${r.received}/${r.sent} back (${r.error})`
          : `echo ${label(n.name, n.node_id)}: ${r.received}/${r.sent} back, median ${rtt(r.rtt_ms_median)}`,
      ),
    );
    const drop = el("button", { type: "button", "data-action": "disconnect" }, "disconnect");
    drop.addEventListener("click", () =>
      act("disconnect", { node: n.node_id }, () => `closed the link with ${label(n.name, n.node_id)}`),
    );
    box.append(echo, drop);
    return box;
  }

  function renderNeighbours(s) {
    fill(
      document.getElementById("neighbours"),
      ["name", "node ID", "address", "dir", "RTT", "in / out (bytes)", "sess.", ""],
      s.neighbours,
      (n) => [
        n.name || "",
        short(n.node_id),
        n.address || "",
        n.direction === "outbound" ? "out" : "in",
        rtt(n.rtt_ms),
        `${n.bytes_in} / ${n.bytes_out}`,
        n.sessions,
        actions(n),
      ],
      ["data-node-id", "node_id"],
    );
  }

  // The graph on a circle, in name order, so nodes keep their places while
  // others come and go; this node is red.
  function renderTopology(s) {
    const t = s.topology;
    const box = document.getElementById("topology");
    const nodes = t.nodes.slice().sort((a, b) => label(a.name, a.node_id).localeCompare(label(b.name, b.node_id)));
    const W = 400, H = 300, R = Math.min(W, H) / 2 - 40;
    const at = {};
    nodes.forEach((n, i) => {
      const angle = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(nodes.length, 1);
      at[n.node_id] = nodes.length === 1 ? [W / 2, H / 2] : [W / 2 + R * Math.cos(angle), H / 2 + R * Math.sin(angle)];
    });
    const parts = [];
    for (const link of t.links) {
      const a = at[link.a], b = at[link.b];
      if (!a || !b) continue;
      parts.push(svg("line", { x1: a[0], y1: a[1], x2: b[0], y2: b[1], class: "link", "data-link": link.a + " " + link.b }));
    }
    for (const n of nodes) {
      const [x, y] = at[n.node_id];
      const g = svg("g", { "data-node-id": n.node_id, class: n.self ? "node self" : "node " + n.role });
      g.append(svg("circle", { cx: x, cy: y, r: n.role === "end" ? 5 : 7 }));
      g.append(svg("text", { x: x, y: y + 20, "text-anchor": "middle" }, label(n.name, n.node_id)));
      g.append(svg("title", {}, n.node_id));
      parts.push(g);
    }
    box.replaceChildren(...parts);
    const summary = `${nodes.length} node${nodes.length === 1 ? "" : "s"}, ${t.links.length} routable link${t.links.length === 1 ? "" : "s"}`;
    document.getElementById("topology-summary").textContent = t.has_database
      ? `${summary}; database digest ${String(t.digest).slice(0, 16)}`
      : `${summary} (an end node keeps no topology database: its neighbours)`;
  }

  function renderSessions(s) {
    fill(
      document.getElementById("sessions"),
      ["session ID", "plugin", "class of service", "peer", "dir", "in / out (bytes)"],
      s.sessions,
      (x) => [
        x.session_id.slice(0, 16),
        x.plugin,
        x.cos,
        label(x.peer_name, x.peer_node_id),
        x.direction === "outbound" ? "out" : "in",
        `${x.bytes_in} / ${x.bytes_out}`,
      ],
      ["data-session-id", "session_id"],
    );
  }

  function renderSections(s) {
    const parts = [];
    for (const section of s.sections) {
      const box = el("section", { class: "plugin" });
      box.append(el("h2", {}, section.title));
      const table = el("table", {});
      fill(table, section.headers, section.rows, (row) => row, null);
      box.append(table);
      parts.push(box);
    }
    document.getElementById("plugin-sections").replaceChildren(...parts);
  }

  function render(s) {
    renderNode(s);
    renderNeighbours(s);
    renderTopology(s);
    renderSessions(s);
    renderSections(s);
  }

  // Show an action's state: "pending", then "done" or "failed".
  function say(text, state) {
    const out = document.getElementById("action-result");
    out.textContent = text;
    out.className = state;
  }

  // POST an action; the cookie authenticates and the CSRF header shows
  // the request comes from this page.
  async function act(action, body, describe) {
    say(`${action}...`, "pending");
    try {
      const response = await fetch("/api/v1/" + action, {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/json", "x-appn-csrf": csrf },
        body: JSON.stringify(body),
      });
      const answer = await response.json();
      if (!response.ok) say(`${action} failed: ${answer.error}`, "failed");
      else say(describe(answer), "done");
    } catch (e) {
      say(`${action} failed: ${e}`, "failed");
    }
  }

  document.getElementById("connect-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const address = event.target.elements.address.value.trim();
    act("connect", { address: address }, (n) => `linked with ${label(n.name, n.node_id)}`);
  });

  render(JSON.parse(document.getElementById("appn-snapshot").textContent));

  const live = document.getElementById("live");
  const events = new EventSource("/events");
  events.addEventListener("snapshot", (event) => render(JSON.parse(event.data)));
  events.addEventListener("open", () => {
    live.textContent = "live";
    live.className = "up";
  });
  events.addEventListener("error", () => {
    // EventSource reconnects by itself; the first event brings everything.
    live.textContent = "reconnecting";
    live.className = "down";
  });
})();
