/// The live page at `/` on the admin port (docs/observability.md): one self-contained HTML document, no assets from
/// anywhere and no build step. It subscribes to `/events` (server-sent events, one ``LiveFrame`` a second) and draws
/// the node's view of the fabric as a graph (this node, its peers, and the clusters its gateway links reach, each link
/// labelled with its rate), the largest messages in flight with their progress, and the last errors. The browser's
/// EventSource reconnects by itself when the node restarts or the stream ends.
enum LivePage {
    static let html = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Freight node</title>
        <style>
          :root { --bg:#0f1720; --panel:#17212d; --line:#2a3a4d; --text:#d8e1ea; --dim:#8193a6; --accent:#4fb3ff;
                  --ok:#4cd18a; --warn:#ffb547; --bad:#ff6b6b; }
          * { box-sizing: border-box; }
          body { margin:0; background:var(--bg); color:var(--text); font:14px/1.4 system-ui, sans-serif; }
          header { display:flex; align-items:baseline; gap:16px; padding:14px 20px; border-bottom:1px solid var(--line); }
          header h1 { margin:0; font-size:18px; }
          header .dim, .dim { color:var(--dim); }
          #state { margin-left:auto; font-size:12px; }
          #state.live { color:var(--ok); } #state.down { color:var(--bad); }
          main { display:grid; grid-template-columns: minmax(520px, 3fr) minmax(320px, 2fr); gap:16px; padding:16px 20px; }
          section { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
          section h2 { margin:0 0 10px; font-size:13px; text-transform:uppercase; letter-spacing:.06em; color:var(--dim); }
          #cards { display:grid; grid-template-columns: repeat(4, 1fr); gap:10px; }
          .card .value { font-size:20px; font-variant-numeric: tabular-nums; }
          .card .label { color:var(--dim); font-size:12px; }
          svg { width:100%; height:420px; display:block; }
          .cluster rect { fill:none; stroke:var(--line); stroke-dasharray:6 4; }
          .cluster text { fill:var(--dim); font-size:12px; }
          .node circle { fill:#1f3b57; stroke:var(--accent); stroke-width:2; }
          .node.self circle { fill:var(--accent); }
          .node.gateway circle { fill:#3b2f57; stroke:#b48cff; }
          .node.down circle { stroke:var(--bad); }
          .node text { fill:var(--text); font-size:12px; text-anchor:middle; }
          .link line { stroke:#3d5a78; }
          .link.active line { stroke:var(--accent); }
          .link.down line { stroke:var(--bad); stroke-dasharray:4 4; }
          .link text { fill:var(--dim); font-size:11px; text-anchor:middle; }
          table { width:100%; border-collapse:collapse; font-size:13px; }
          th { text-align:left; color:var(--dim); font-weight:normal; padding:4px 6px; border-bottom:1px solid var(--line); }
          td { padding:5px 6px; border-bottom:1px solid #1e2a37; font-variant-numeric: tabular-nums; vertical-align:middle; }
          .bar { position:relative; height:10px; width:120px; background:#24344a; border-radius:5px; overflow:hidden; }
          .bar span { position:absolute; left:0; top:0; bottom:0; background:var(--accent); }
          .code { color:var(--bad); font-family:ui-monospace, monospace; }
          .empty { color:var(--dim); padding:8px 6px; }
          .wide { grid-column: 1 / -1; }
        </style>
        </head>
        <body data-frames="0">
        <header><h1 id="title">Freight node</h1><span class="dim" id="subtitle"></span><span id="state">connecting…</span></header>
        <main>
          <section><h2>Fabric</h2><svg id="graph" viewBox="0 0 760 420" role="img" aria-label="nodes and links"></svg></section>
          <section><h2>Node</h2><div id="cards"></div></section>
          <section class="wide"><h2>Messages in flight <span class="dim" id="omitted"></span></h2>
            <table><thead><tr><th>message</th><th>address</th><th>size</th><th>progress</th><th>rate</th><th>from</th><th>to</th><th>age</th></tr></thead>
            <tbody id="messages"></tbody></table></section>
          <section class="wide"><h2>Last errors</h2>
            <table><thead><tr><th>time (UTC)</th><th>code</th><th>address</th><th>size</th><th>reason</th></tr></thead>
            <tbody id="errors"></tbody></table></section>
        </main>
        <script>
        "use strict";
        const SVG = "http://www.w3.org/2000/svg";
        function el(name, attrs, parent) {
          const node = document.createElementNS(SVG, name);
          for (const key in attrs) node.setAttribute(key, attrs[key]);
          if (parent) parent.appendChild(node);
          return node;
        }
        function bytes(value) {
          const units = ["B", "KiB", "MiB", "GiB", "TiB"];
          let i = 0; while (value >= 1024 && i < units.length - 1) { value /= 1024; i++; }
          return (i === 0 ? value : value.toFixed(value < 10 ? 1 : 0)) + " " + units[i];
        }
        function rate(value) {
          if (value >= 1e9) return (value / 1e9).toFixed(2) + " GB/s";
          if (value >= 1e6) return Math.round(value / 1e6) + " MB/s";
          if (value >= 1e3) return Math.round(value / 1e3) + " kB/s";
          return Math.round(value) + " B/s";
        }
        function count(value) { return Math.round(value).toLocaleString("en-US"); }
        function cell(row, text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; row.appendChild(td); return td; }

        function drawGraph(frame) {
          const svg = document.getElementById("graph");
          svg.replaceChildren();
          const peers = frame.links.filter(l => l.kind === "peer");
          const gateways = frame.links.filter(l => l.kind === "gateway");
          const clusterWidth = gateways.length ? 500 : 740;
          const cluster = el("g", { class: "cluster" }, svg);
          el("rect", { x: 10, y: 10, width: clusterWidth, height: 400, rx: 14 }, cluster);
          el("text", { x: 24, y: 30 }, cluster).textContent = "cluster " + frame.node.cluster;
          const center = { x: 10 + clusterWidth / 2, y: 215 };
          const links = el("g", {}, svg), nodes = el("g", {}, svg);
          function link(from, to, info) {
            const moving = info.bytesOutPerSecond + info.bytesInPerSecond;
            const g = el("g", { class: "link" + (info.up ? (moving > 0 ? " active" : "") : " down"), "data-name": info.name }, links);
            el("line", { x1: from.x, y1: from.y, x2: to.x, y2: to.y, "stroke-width": moving > 0 ? Math.min(8, 1.5 + Math.log10(1 + moving / 1e6) * 2.5) : 1.5 }, g);
            let label = "→ " + rate(info.bytesOutPerSecond);
            if (info.kind === "gateway") label += "  ← " + rate(info.bytesInPerSecond) + (info.rttMillis ? "  " + info.rttMillis.toFixed(1) + " ms" : "");
            el("text", { x: from.x + (to.x - from.x) * 0.55, y: from.y + (to.y - from.y) * 0.55 - 8 }, g).textContent = label;
          }
          function node(at, name, cls, detail) {
            const g = el("g", { class: "node " + cls, "data-name": name }, nodes);
            el("circle", { cx: at.x, cy: at.y, r: cls.includes("self") ? 24 : 18 }, g);
            el("text", { x: at.x, y: at.y + 38 }, g).textContent = name;
            if (detail) el("text", { x: at.x, y: at.y + 52, class: "dim", fill: "#8193a6" }, g).textContent = detail;
          }
          const radius = 140;
          peers.forEach((peer, i) => {
            const angle = -Math.PI / 2 + Math.PI / Math.max(peers.length, 1) + (2 * Math.PI * i) / Math.max(peers.length, 1);
            const at = { x: center.x + Math.cos(angle) * radius * (clusterWidth / 500), y: center.y + Math.sin(angle) * Math.min(radius, 140) };
            link(center, at, peer);
            node(at, peer.name, "peer" + (peer.up ? "" : " down"), peer.endpoints + " endpoints");
          });
          gateways.forEach((gw, i) => {
            const height = 400 / gateways.length;
            const box = { x: 540, y: 10 + i * height + 4, width: 210, height: height - 8 };
            const g = el("g", { class: "cluster" }, svg);
            el("rect", { x: box.x, y: box.y, width: box.width, height: box.height, rx: 14 }, g);
            el("text", { x: box.x + 14, y: box.y + 20 }, g).textContent = "cluster " + gw.name;
            const at = { x: box.x + box.width / 2, y: box.y + box.height / 2 };
            link(center, at, gw);
            node(at, "gateway " + gw.name, "gateway" + (gw.up ? "" : " down"), gw.address);
          });
          node(center, frame.node.name, "self" + (frame.node.gateway ? " gateway" : ""), frame.totals.localEndpoints + " endpoints here");
        }

        function drawCards(frame) {
          const t = frame.totals;
          const cards = [
            [count(t.inFlight), "messages in flight"], [count(t.deliveredPerSecond) + "/s", "delivered (" + count(t.delivered) + ")"],
            [count(t.failedPerSecond) + "/s", "failed (" + count(t.failed) + ")"], [count(t.smallInFlight), "small in flight"],
            [rate(t.bytesInPerSecond), "in"], [rate(t.bytesOutPerSecond), "out"],
            [bytes(t.memoryReserved) + " / " + bytes(t.memoryBudget), "memory reserved"],
            [bytes(t.sharedPool) + " / " + bytes(t.sharedBudget), "shared pools"],
            [bytes(t.resident), "resident"], [count(t.knownEndpoints), "endpoints in cluster"],
            [frame.node.directory, frame.node.directoryUnreachable ? "directory UNREACHABLE" : "directory ok"],
            [Math.floor(frame.node.uptimeSeconds) + " s", "up"],
          ];
          const box = document.getElementById("cards");
          box.replaceChildren(...cards.map(([value, label]) => {
            const div = document.createElement("div"); div.className = "card";
            div.innerHTML = '<div class="value"></div><div class="label"></div>';
            div.firstChild.textContent = value; div.lastChild.textContent = label; return div;
          }));
        }

        function drawMessages(frame) {
          const body = document.getElementById("messages");
          body.replaceChildren();
          for (const m of frame.messages) {
            const row = document.createElement("tr"); row.className = "message"; row.dataset.id = m.id;
            cell(row, m.id); cell(row, m.address); cell(row, bytes(m.size));
            const done = m.size > 0 ? Math.min(100, (100 * m.bytes) / m.size) : 100;
            const bar = cell(row, ""); bar.innerHTML = '<div class="bar"><span></span></div> ';
            bar.firstChild.firstChild.style.width = done.toFixed(1) + "%";
            bar.appendChild(document.createTextNode(done.toFixed(0) + "%"));
            cell(row, rate(m.bytesPerSecond)); cell(row, m.from); cell(row, m.to.join(", ")); cell(row, m.ageSeconds.toFixed(1) + " s");
            body.appendChild(row);
          }
          if (!frame.messages.length) { const row = document.createElement("tr"); cell(row, "no messages in flight", "empty").colSpan = 8; body.appendChild(row); }
          document.getElementById("omitted").textContent = frame.messagesOmitted ? "(" + frame.messagesOmitted + " more)" : "";
        }

        function drawErrors(frame) {
          const body = document.getElementById("errors");
          body.replaceChildren();
          for (const e of frame.errors) {
            const row = document.createElement("tr"); row.className = "error";
            cell(row, new Date(e.unixMillis).toISOString().slice(11, 19)); cell(row, e.code, "code");
            cell(row, e.address); cell(row, bytes(e.size)); cell(row, e.message);
            body.appendChild(row);
          }
          if (!frame.errors.length) { const row = document.createElement("tr"); cell(row, "none", "empty").colSpan = 5; body.appendChild(row); }
        }

        let frames = 0;
        const state = document.getElementById("state");
        const events = new EventSource("events");
        events.onmessage = (event) => {
          const frame = JSON.parse(event.data);
          document.getElementById("title").textContent = "node " + frame.node.name;
          document.getElementById("subtitle").textContent = "cluster " + frame.node.cluster + " · " + frame.node.listen + (frame.node.gateway ? " · gateway on " + frame.node.gateway : "");
          document.title = "Freight · " + frame.node.name;
          drawGraph(frame); drawCards(frame); drawMessages(frame); drawErrors(frame);
          frames += 1; document.body.dataset.frames = String(frames);
          state.textContent = "live"; state.className = "live";
        };
        events.onerror = () => { state.textContent = "reconnecting…"; state.className = "down"; };
        </script>
        </body>
        </html>
        """#
}
