// warren dashboard: refreshes the parts of a page marked data-live="/ui/live/..." without
// reloading the page. Every data-refresh-ms milliseconds (the <body>'s attribute; 5000 by
// default) while the tab is visible, it fetches the fragment and puts it in place. The
// fragments are rendered (and escaped) by the server, like the page itself.
"use strict";
(function () {
  const every = Number(document.body.dataset.refreshMs) || 5000;
  for (const el of document.querySelectorAll("[data-live]")) {
    const url = el.dataset.live;
    let stopped = false;
    const tick = async function () {
      if (stopped) return;
      if (!document.hidden) {
        try {
          const resp = await fetch(url, {
            credentials: "same-origin",
            cache: "no-store",
            headers: { accept: "text/html" },
          });
          if (resp.ok) {
            el.innerHTML = await resp.text();
            el.dataset.refreshed = new Date().toISOString();
            el.classList.remove("stale");
          } else {
            el.classList.add("stale");
            // The session ended (401) or the thing is gone (404): stop asking.
            if (resp.status === 401 || resp.status === 404) stopped = true;
          }
        } catch (e) {
          el.classList.add("stale");
        }
      }
      setTimeout(tick, every);
    };
    setTimeout(tick, every);
  }
  // Requeue "select all" box on the dead-letter page.
  for (const all of document.querySelectorAll("input[data-select-all]")) {
    all.addEventListener("change", function () {
      for (const box of document.querySelectorAll("input[name=ids]")) box.checked = all.checked;
    });
  }
})();
