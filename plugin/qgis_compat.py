"""The few things spelled differently across the QGIS versions the plugin runs on (3.22 LTR to QGIS 4 on Qt 6).

QgsField's type: ``QMetaType.Type`` from QGIS 3.38 on, where the ``QVariant.Type`` overload is deprecated
(and on Qt 6 ``QVariant`` has no types at all); ``QVariant.Type`` before 3.38, which is always Qt 5.
"""
from __future__ import annotations

from qgis.core import Qgis
from qgis.PyQt.QtCore import QMetaType, QVariant

if Qgis.QGIS_VERSION_INT >= 33800:
    FIELD_TYPES = {"int": QMetaType.Type.Int, "int64": QMetaType.Type.LongLong, "real": QMetaType.Type.Double,
                   "str": QMetaType.Type.QString}
else:
    FIELD_TYPES = {"int": QVariant.Type.Int, "int64": QVariant.Type.LongLong, "real": QVariant.Type.Double,
                   "str": QVariant.Type.String}
