<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<!--
  RS-CLIP Search: style of search and similar-tile result layers.
  Tiles are coloured cream to dark red by "score" (ColorBrewer OrRd: no bright yellow, which is
  QGIS's colour for the selected best tile) and labelled with their "rank"; the class breaks
  are left empty on purpose: the plugin recomputes them (pretty breaks, rounded, empty classes
  dropped) from each result's scores, as scores of different models and queries live on
  different ranges.
-->
<qgis version="3.22.0" styleCategories="Symbology|Labeling|Rendering" labelsEnabled="1">
  <renderer-v2 type="graduatedSymbol" attr="score" graduatedMethod="GraduatedColor" symbollevels="0" enableorderby="0" forceraster="0">
    <ranges/>
    <symbols/>
    <source-symbol>
      <symbol name="0" type="fill" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleFill" pass="0" enabled="1" locked="0">
          <Option type="Map">
            <Option name="color" type="QString" value="253,141,60,255"/>
            <Option name="style" type="QString" value="solid"/>
            <Option name="outline_color" type="QString" value="32,32,32,255"/>
            <Option name="outline_style" type="QString" value="solid"/>
            <Option name="outline_width" type="QString" value="0.3"/>
            <Option name="outline_width_unit" type="QString" value="MM"/>
            <Option name="joinstyle" type="QString" value="miter"/>
          </Option>
        </layer>
      </symbol>
    </source-symbol>
    <colorramp name="[source]" type="gradient">
      <Option type="Map">
        <Option name="rampType" type="QString" value="gradient"/>
        <Option name="color1" type="QString" value="254,240,217,255"/>
        <Option name="color2" type="QString" value="179,0,0,255"/>
        <Option name="discrete" type="QString" value="0"/>
        <Option name="stops" type="QString" value="0.25;253,204,138,255:0.5;252,141,89,255:0.75;227,74,51,255"/>
      </Option>
    </colorramp>
    <classificationMethod id="Pretty">
      <symmetricMode enabled="0" symmetrypoint="0" astride="0"/>
      <labelFormat format="%1 – %2" labelprecision="3" trimtrailingzeroes="0"/>
      <parameters>
        <Option/>
      </parameters>
      <extraInformation/>
    </classificationMethod>
  </renderer-v2>
  <labeling type="simple">
    <settings calloutType="simple">
      <text-style fieldName="rank" isExpression="0" fontSize="9" fontSizeUnit="Point" fontWeight="75" textColor="0,0,0,255" textOpacity="1">
        <text-buffer bufferDraw="1" bufferSize="0.8" bufferSizeUnits="MM" bufferColor="255,255,255,255" bufferOpacity="0.9" bufferNoFill="1" bufferJoinStyle="128"/>
      </text-style>
      <placement placement="1" dist="0" offsetType="0" priority="8" centroidInside="1" centroidWhole="1"/>
      <rendering drawLabels="1" obstacle="0" upsidedownLabels="0" scaleVisibility="0" displayAll="0"/>
    </settings>
  </labeling>
  <blendMode>0</blendMode>
  <featureBlendMode>0</featureBlendMode>
  <layerOpacity>0.6</layerOpacity>
  <layerGeometryType>2</layerGeometryType>
</qgis>
