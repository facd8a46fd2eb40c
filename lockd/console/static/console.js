// lockd console: refresh the page's live part in place, show times in local time, break a lock on request.
// The admin token typed for a break is sent with that one request and then dropped: it is never kept in a
// variable past the request, in storage or in a cookie.
"use strict";

(function () {
  const pollMs = Number(document.body.dataset.pollMs) || 1000;
  const state = document.querySelector("[data-refresh-state]");
  const live = document.querySelector("[data-live]");
  let inFlight = false;
  let lastHtml = null;

  const localFormat = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "short",
  });

  function localizeTimes(root) {
    for (const el of root.querySelectorAll("time[datetime]")) {
      const moment = new Date(el.getAttribute("datetime"));
      if (!Number.isNaN(moment.getTime())) {
        el.textContent = localFormat.format(moment);  // title keeps the UTC text, shown on hover
      }
    }
  }

  function focusKey() {
    const el = document.activeElement;
    return el && live && live.contains(el) ? el.dataset.key || null : null;
  }

  function refocus(key) {
    if (!key) return;
    for (const el of live.querySelectorAll("[data-key]")) {
      if (el.dataset.key === key) { el.focus(); return; }
    }
  }

  async function refresh() {
    if (!live || inFlight) return;
    inFlight = true;
    try {
      const answer = await fetch(location.href, { headers: { "X-Lockd-Live": "1" }, cache: "no-store" });
      const html = await answer.text();
      if (!answer.ok && answer.status !== 404) throw new Error("HTTP " + answer.status);
      if (html !== lastHtml) {
        const key = focusKey();
        live.innerHTML = html;
        lastHtml = html;
        localizeTimes(live);
        refocus(key);
      }
      state.textContent = "Live: updated " + new Date().toLocaleTimeString();
      state.classList.remove("stale");
    } catch (err) {
      state.textContent = "Live updates paused: cannot reach lockd (" + err.message + "); retrying";
      state.classList.add("stale");
    } finally {
      inFlight = false;
    }
  }

  // -- prefix filter: narrows as you type, and the address stays shareable --------------------------------
  const prefix = document.querySelector("[data-prefix-filter]");
  let typing = null;
  if (prefix) {
    prefix.addEventListener("input", function () {
      clearTimeout(typing);
      typing = setTimeout(function () {
        const url = new URL(location.href);
        if (prefix.value) url.searchParams.set("prefix", prefix.value); else url.searchParams.delete("prefix");
        history.replaceState(null, "", url);
        refresh();
      }, 250);
    });
  }

  // -- force-break ----------------------------------------------------------------------------------------
  const dialog = document.getElementById("break-dialog");
  const form = document.getElementById("break-form");
  const tokenInput = document.getElementById("break-token");
  const result = document.getElementById("break-result");
  let target = null;  // {name, key} of the lock the dialog is about

  function say(text, ok) {
    result.textContent = text;
    result.className = "result " + (ok ? "ok" : "error");
    result.hidden = false;
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest("[data-break]");
    if (button) {
      target = { name: button.dataset.break, key: button.dataset.key };
      dialog.querySelector("[data-break-name]").textContent = target.name;
      tokenInput.value = "";
      dialog.showModal();
      tokenInput.focus();
    } else if (event.target.closest("[data-break-cancel]")) {
      dialog.close("cancel");
    }
  });

  dialog.addEventListener("close", function () {
    tokenInput.value = "";
    if (target) refocus(target.key);
  });

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    if (!target) return;
    const name = target.name;
    const headers = { Authorization: "Bearer " + tokenInput.value };
    tokenInput.value = "";
    dialog.close("break");
    say("Breaking " + name + "…", true);
    try {
      const answer = await fetch("/v1/locks/" + encodeURIComponent(name), { method: "DELETE", headers: headers });
      if (answer.status === 204) {
        say("Broke lock " + name + ": it is free, and the break is in the audit trail.", true);
      } else {
        let detail = answer.statusText;
        try { detail = (await answer.json()).detail || detail; } catch (err) { /* not JSON */ }
        say("Lock " + name + " was not broken: " + detail + " (HTTP " + answer.status + ")", false);
      }
    } catch (err) {
      say("Lock " + name + " was not broken: cannot reach lockd (" + err.message + ")", false);
    }
    refresh();
  });

  // -- start ----------------------------------------------------------------------------------------------
  localizeTimes(document);
  if (live) {
    lastHtml = null;
    state.textContent = "Live";
    setInterval(function () { if (!document.hidden) refresh(); }, pollMs);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });
  } else {
    state.textContent = "";
  }
})();
