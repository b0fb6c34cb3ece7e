// Keeps a dashboard page current without reloading it: every few seconds (data-poll, kept
// within 1-60 s) it asks the same URL for its version (?part=version, a few bytes) and, when
// that changed, fetches the page's <main> (?part=main) and swaps it in. Same origin only: the
// Content-Security-Policy allows nothing else, and the session cookie goes along.
(function () {
  "use strict";
  var main = document.getElementById("live");
  if (!main) { return; }
  var seconds = Math.min(Math.max(Number(main.dataset.poll) || 2, 1), 60);
  var status = document.getElementById("live-status");

  function say(text, state) {
    if (status) { status.textContent = text; status.dataset.state = state; }
  }

  function partUrl(part) {
    var url = new URL(window.location.href);
    url.searchParams.set("part", part);
    return url;
  }

  function get(part) {
    return fetch(partUrl(part), {credentials: "same-origin", cache: "no-store",
                                 redirect: "error"});
  }

  async function refresh() {
    var answer = await get("version");
    if (answer.status === 401) { return "signed out: reload to sign in"; }
    if (!answer.ok) { throw new Error(String(answer.status)); }
    var version = (await answer.json()).version;
    if (version === main.dataset.version) { return ""; }
    var page = await get("main");
    if (page.status === 401) { return "signed out: reload to sign in"; }
    if (!page.ok) { throw new Error(String(page.status)); }
    var fresh = new DOMParser().parseFromString(await page.text(), "text/html")
      .getElementById("live");
    if (fresh) {
      main.replaceChildren.apply(main, Array.from(fresh.childNodes));
      main.dataset.version = fresh.dataset.version;
    }
    return "";
  }

  async function tick() {
    if (!document.hidden) {
      try {
        var stop = await refresh();
        if (stop) { say(stop, "stopped"); return; }
        say("live", "live");
      } catch (error) {
        say("offline, retrying", "offline");
      }
    }
    window.setTimeout(tick, seconds * 1000);
  }

  window.setTimeout(tick, seconds * 1000);
})();
