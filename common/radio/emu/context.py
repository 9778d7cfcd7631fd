"""The IIO context XML the emulator serves on ``PRINT``, built from its own device model.

libiio parses it into the client's context (``iio_create_xml_context_mem``), so the client
sees exactly the devices, channels and attributes the emulator answers for.
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

from common.radio.emu.devices import Device

#: The DTD libiio 0.2x publishes with every context.
DTD = (
    '<!DOCTYPE context ['
    '<!ELEMENT context (device | context-attribute)*>'
    '<!ELEMENT context-attribute EMPTY>'
    '<!ELEMENT device (channel | attribute | debug-attribute | buffer-attribute)*>'
    '<!ELEMENT channel (scan-element?, attribute*)>'
    '<!ELEMENT attribute EMPTY>'
    '<!ELEMENT scan-element EMPTY>'
    '<!ELEMENT debug-attribute EMPTY>'
    '<!ELEMENT buffer-attribute EMPTY>'
    '<!ATTLIST context name CDATA #REQUIRED description CDATA #IMPLIED>'
    '<!ATTLIST context-attribute name CDATA #REQUIRED value CDATA #REQUIRED>'
    '<!ATTLIST device id CDATA #REQUIRED name CDATA #IMPLIED>'
    '<!ATTLIST channel id CDATA #REQUIRED type (input|output) #REQUIRED name CDATA #IMPLIED>'
    '<!ATTLIST scan-element index CDATA #REQUIRED format CDATA #REQUIRED scale CDATA #IMPLIED>'
    '<!ATTLIST attribute name CDATA #REQUIRED filename CDATA #IMPLIED value CDATA #IMPLIED>'
    '<!ATTLIST debug-attribute name CDATA #REQUIRED value CDATA #IMPLIED>'
    '<!ATTLIST buffer-attribute name CDATA #REQUIRED value CDATA #IMPLIED>'
    ']>'
)


def context_xml(devices: list[Device], attributes: dict[str, str]) -> str:
    """The context as libiio's XML: context attributes, then each device in order."""
    out = ['<?xml version="1.0" encoding="utf-8"?>', DTD,
           '<context name="network" description="semalign ADALM-Pluto emulator">']
    out += [f"<context-attribute name={quoteattr(k)} value={quoteattr(v)} />" for k, v in attributes.items()]
    for dev in devices:
        out.append(f"<device id={quoteattr(dev.id)} name={quoteattr(dev.name)} >")
        for ch in dev.channels:
            name = f" name={quoteattr(ch.name)}" if ch.name else ""
            kind = "output" if ch.output else "input"
            out.append(f"<channel id={quoteattr(ch.id)}{name} type=\"{kind}\" >")
            if ch.scan is not None:
                out.append(f"<scan-element index=\"{ch.scan.index}\" format={quoteattr(ch.scan.format)} />")
            out += [f"<attribute name={quoteattr(a.name)} filename={quoteattr(a.filename)} />"
                    for a in ch.attrs.values()]
            out.append("</channel>")
        out += [f"<attribute name={quoteattr(a)} />" for a in dev.attrs]
        out += [f"<debug-attribute name={quoteattr(a)} />" for a in dev.debug_attrs]
        out += [f"<buffer-attribute name={quoteattr(a)} />" for a in dev.buffer_attrs]
        out.append("</device>")
    out.append("</context>")
    return "".join(out)
