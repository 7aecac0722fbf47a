-- What Quarto adds to pandoc Markdown, for the preview rendered without Quarto
-- (vaeinf.report.paper.preview): conditional content and numbered cross-references, for HTML and Typst.
--
--   ::: {.content-visible when-format="html"}   kept for HTML only (also unless-format,
--   ::: {.content-hidden ...}, and the same classes on [spans]); "pdf" means Typst here
--   # Title {#sec-x}        numbered 1, 1.1, ... unless {.unnumbered}; from the first
--                           {.appendix} level-1 heading on: A, A.1, B, ...
--   ![Caption](f.png){#fig-x}, ::: {#fig-x} (content, then the caption paragraph)
--   | table |  + ": Caption {#tbl-x}"
--   $$ ... $$ {#eq-x}
--   ::: {.ragged}            its paragraphs flush left (Typst)
--   ::: {layout-ncol=N}      its figures side by side, N to a row (images without width=
--                            fill their cell)
--   @sec-x, @fig-x, @tbl-x, @eq-x   ->  "Section 1", "Figure 1", "Table 1", "Equation 1",
--                                      linked to the target; an unknown label is an error.
--
-- Numbers are written into the text (headings, captions, equations), so the HTML and the PDF
-- show the same numbers whatever the writer's own numbering; the Typst header turns figure
-- numbering off (vaeinf.report.paper.preview). In HTML, images become data URIs.

local KINDS = { sec = "Section", fig = "Figure", tbl = "Table", eq = "Equation" }
local numbers = {}

local function kind_of(id)
  return id and KINDS[id:match("^(%a+)%-")] and id:match("^(%a+)%-") or nil
end

-- 1. Conditional content ------------------------------------------------------------------

local function format_is(names)
  for name in names:gmatch("[^,%s]+") do
    if name == "html" and FORMAT:match("html") then return true end
    if (name == "pdf" or name == "typst") and FORMAT == "typst" then return true end
    if name == FORMAT then return true end
  end
  return false
end

local function shown(el)
  local when, unless = el.attributes["when-format"], el.attributes["unless-format"]
  local matches
  if when then
    matches = format_is(when)
  elseif unless then
    matches = not format_is(unless)
  else
    matches = true
  end
  if el.classes:includes("content-visible") then return matches end
  if el.classes:includes("content-hidden") then return not matches end
  return nil
end

local function conditional(el)
  local show = shown(el)
  if show == nil then return nil end
  return show and el.content or {}
end

local Conditional = { Div = conditional, Span = conditional }

-- 2. Labelled equations: Math, then "{#eq-x}" -> a Span with that id around the Math --------

local Equations = {
  Inlines = function(inlines)
    local out = pandoc.Inlines({})
    local i = 1
    while i <= #inlines do
      local el = inlines[i]
      local j = i + 1
      if inlines[j] and (inlines[j].t == "Space" or inlines[j].t == "SoftBreak") then j = j + 1 end
      local label = inlines[j] and inlines[j].t == "Str" and inlines[j].text:match("^{#(eq%-[%w_-]+)}$")
      if el.t == "Math" and el.mathtype == "DisplayMath" and label then
        out:insert(pandoc.Span({ el }, { id = label }))
        i = j + 1
      else
        out:insert(el)
        i = i + 1
      end
    end
    return out
  end,
}

-- 3. Numbering, in document order ----------------------------------------------------------

local counters = { fig = 0, tbl = 0, eq = 0 }
local sections = {}
local appendix = false

local function prefix_caption(caption, text)
  local label = pandoc.Inlines({ pandoc.Str(text), pandoc.Space() })
  if #caption.long == 0 then
    caption.long = { pandoc.Plain(pandoc.Inlines({ pandoc.Str(text) })) }
  else
    local first = caption.long[1]
    first.content = label .. first.content
  end
  return caption
end

local function typst_equation(math, id, number)
  local body = pandoc.write(pandoc.Pandoc({ pandoc.Plain({ math }) }), "typst")
  body = body:gsub("%s+$", "")
  return pandoc.RawInline(
    "typst",
    string.format('#[#set math.equation(numbering: _ => "(%s)")\n%s <%s>]', number, body, id)
  )
end

-- The next number of a figure or table: counted, kept for its references, put in its caption.
local function number_caption(kind, label, id, caption)
  counters[kind] = counters[kind] + 1
  numbers[id] = tostring(counters[kind])
  return prefix_caption(caption, label .. " " .. counters[kind] .. ":")
end

local Numbering = {
  traverse = "topdown",

  Header = function(el)
    if el.classes:includes("unnumbered") then return nil end
    local level = el.level
    if level == 1 and el.classes:includes("appendix") and not appendix then
      appendix = true -- appendices are lettered: A, A.1, B, ...
      sections = {}
    end
    sections[level] = (sections[level] or 0) + 1
    for deeper = level + 1, 6 do sections[deeper] = nil end
    local parts = {}
    for l = 1, level do parts[#parts + 1] = tostring(sections[l] or 0) end
    if appendix then parts[1] = string.char(64 + sections[1]) end
    local number = table.concat(parts, ".")
    if el.identifier ~= "" then numbers[el.identifier] = number end
    el.content = pandoc.Inlines({ pandoc.Str(number), pandoc.Space() }) .. el.content
    return el
  end,

  Div = function(el)
    if kind_of(el.identifier) ~= "fig" then return nil end
    -- A figure div: its content, then the caption paragraph (Quarto's layout).
    local blocks = el.content
    local caption = {}
    if #blocks > 1 and blocks[#blocks].t == "Para" then
      caption = { pandoc.Plain(blocks[#blocks].content) }
      blocks = pandoc.Blocks({ table.unpack(blocks, 1, #blocks - 1) })
    end
    local fig = pandoc.Figure(blocks, { long = caption }, el.attr)
    fig.caption = number_caption("fig", "Figure", el.identifier, fig.caption)
    return fig, false
  end,

  Figure = function(el)
    if kind_of(el.identifier) ~= "fig" then return nil end
    el.caption = number_caption("fig", "Figure", el.identifier, el.caption)
    return el
  end,

  Table = function(el)
    if kind_of(el.identifier) ~= "tbl" then return nil end
    el.caption = number_caption("tbl", "Table", el.identifier, el.caption)
    return el
  end,

  Span = function(el)
    if kind_of(el.identifier) ~= "eq" then return nil end
    counters.eq = counters.eq + 1
    local number = tostring(counters.eq)
    numbers[el.identifier] = number
    local math = el.content[1]
    if FORMAT == "typst" then
      return typst_equation(math, el.identifier, number), false
    end
    el.classes:insert("equation")
    el.content = { math, pandoc.Span({ pandoc.Str("(" .. number .. ")") }, { class = "eqno" }) }
    return el, false
  end,
}

-- 4. References ----------------------------------------------------------------------------

local References = {
  Cite = function(el)
    for _, c in ipairs(el.citations) do
      if not kind_of(c.id) then return nil end -- a bibliography citation: citeproc's
    end
    local out = pandoc.Inlines({})
    for i, c in ipairs(el.citations) do
      local number = numbers[c.id]
      if not number then
        error("preview: reference @" .. c.id .. " has no label {#" .. c.id .. "}")
      end
      if i > 1 then out:extend({ pandoc.Str(";"), pandoc.Space() }) end
      out:extend(c.prefix)
      if #c.prefix > 0 then out:insert(pandoc.Space()) end
      -- [-@fig-x] (SuppressAuthor) gives the number alone, as in Quarto.
      local text = c.mode == "SuppressAuthor" and number or (KINDS[kind_of(c.id)] .. " " .. number)
      out:insert(pandoc.Link(pandoc.Inlines(text), "#" .. c.id))
      out:extend(c.suffix)
    end
    return out
  end,
}

-- 5. HTML: images as data URIs, so the page is one self-contained file. (Cheaper than pandoc's
-- --embed-resources, which would also parse the inlined plotly.js of interactive figures.)

local Embed = {
  Image = function(el)
    if not FORMAT:match("html") or el.src:match("^%a[%w+.-]*:") then return nil end
    local mime, contents = pandoc.mediabag.fetch(el.src)
    if not contents then error("preview: image '" .. el.src .. "' cannot be read") end
    el.src = pandoc.mediabag.make_data_uri(mime, contents)
    return el
  end,
}

-- 6. Layout: ::: {layout-ncol=N} sets its figures side by side. In Typst the row is one
-- floating block of figures that do not float themselves; in HTML, a CSS grid.

local function cell_widths(blocks)
  return blocks:walk({
    Image = function(img)
      if not img.attributes.width then img.attributes.width = "100%" end
      return img
    end,
  })
end

local Layout = {
  Div = function(el)
    local n = tonumber(el.attributes["layout-ncol"])
    if not n then return nil end
    el.attributes["layout-ncol"] = nil
    local cells = pandoc.Blocks({})
    for _, b in ipairs(el.content) do
      if b.t ~= "Null" then cells:insert(b) end
    end
    cells = cell_widths(cells)
    if FORMAT ~= "typst" then
      el.attributes.style = string.format(
        "display: grid; grid-template-columns: repeat(%d, minmax(0, 1fr)); gap: 1em; align-items: start", n)
      el.content = cells
      return el
    end
    local out = pandoc.Blocks({ pandoc.RawBlock("typst", string.format(
      '#figure(kind: "layout", supplement: none, outlined: false, numbering: none)[' ..
      "#set figure(placement: none)\n#grid(columns: %d * (1fr,), gutter: 1em,", n)) })
    for i, b in ipairs(cells) do
      out:insert(pandoc.RawBlock("typst", "["))
      out:insert(b)
      out:insert(pandoc.RawBlock("typst", i < #cells and "]," or "])]"))
    end
    return out
  end,
}

-- 7. ::: {.ragged}: paragraphs set flush left (no justification) in Typst.

local Ragged = {
  Div = function(el)
    if FORMAT ~= "typst" or not el.classes:includes("ragged") then return nil end
    local out = pandoc.Blocks({ pandoc.RawBlock("typst", "#[#set par(justify: false)") })
    out:extend(el.content)
    out:insert(pandoc.RawBlock("typst", "]"))
    return out
  end,
}

return { Conditional, Equations, Numbering, References, Embed, Layout, Ragged }
