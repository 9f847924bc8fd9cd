/* Live validation of a segment rule in the admin's add form: as the operator types, asks the
   admin's rule-check URL (written by the page with json_script) and shows either how many profiles
   the rule selects now or the error with a caret under the character it points at. */
(function () {
  "use strict";

  document.addEventListener("DOMContentLoaded", function () {
    var source = document.getElementById("rule-check-url");
    var input = document.getElementById("id_rule");
    if (!source || !input) { return; }
    var url = JSON.parse(source.textContent);
    var output = document.createElement("div");
    output.id = "rule-check";
    output.className = "rule-check";
    output.setAttribute("aria-live", "polite");
    // below the field (the admin lays the label and the box out in a row)
    (input.closest(".flex-container") || input).insertAdjacentElement("afterend", output);
    var timer = null;
    var sequence = 0;

    function show(state, text, caretLine) {
      output.dataset.state = state;
      output.textContent = "";
      var message = document.createElement("span");
      message.className = "rule-check-message";
      message.textContent = text;
      output.appendChild(message);
      if (caretLine) {
        var pre = document.createElement("pre");
        pre.className = "rule-check-caret";
        pre.textContent = caretLine;
        output.appendChild(pre);
      }
    }

    function check() {
      var rule = input.value;
      var mine = ++sequence;
      if (!rule.trim()) { output.textContent = ""; output.dataset.state = ""; return; }
      fetch(url + "?rule=" + encodeURIComponent(rule), {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (response) { return response.json(); })
        .then(function (result) {
          if (mine !== sequence) { return; }  // a later keystroke's answer wins
          if (result.valid) {
            show("valid", output.dataset.validText.replace("%s", result.matching.toLocaleString() + (result.capped ? "+" : "")));
          } else {
            var caret = null;
            if (result.position !== null && result.position !== undefined) {
              var line = rule.split("\n")[0];
              caret = line + "\n" + " ".repeat(Math.min(result.position, line.length)) + "^";
            }
            show("invalid", result.error, caret);
          }
        })
        .catch(function () { if (mine === sequence) { show("unknown", output.dataset.failedText); } });
    }

    output.dataset.validText = input.dataset.validText || "✓ %s";
    output.dataset.failedText = input.dataset.failedText || "?";
    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(check, 250);
    });
    if (input.value.trim()) { check(); }
  });
})();
