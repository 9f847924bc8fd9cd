/* The import upload form lists mapping inputs for every kind of file; show only those of the kind
   chosen under "contents" (without this script every section stays visible and still works). */
(function () {
  "use strict";

  document.addEventListener("DOMContentLoaded", function () {
    var kind = document.getElementById("id_kind");
    var sections = document.querySelectorAll("#column-mapping tbody[data-kind]");
    if (!kind || !sections.length) { return; }
    function show() {
      sections.forEach(function (section) { section.hidden = section.dataset.kind !== kind.value; });
    }
    kind.addEventListener("change", show);
    show();
  });
})();
