"""Style presets for the sketch and edge tabs: each one wraps the user's prompt in a template.

The nine names are the reference demo's; the wording of each template is this project's own.
"""

from __future__ import annotations

from pipelines.errors import InputError

NO_STYLE = "No style"
EMPTY_SUBJECT = "a scene"

STYLES: dict[str, str] = {
    NO_STYLE: "{prompt}",
    "Cinematic": "cinematic film still of {prompt}, dramatic lighting, shallow depth of field, rich colour grade",
    "3D Model": "{prompt} as a polished 3D render, studio lighting, smooth materials, fine geometric detail",
    "Anime": "anime key visual of {prompt}, cel shading, clean line art, vivid colours",
    "Digital Art": "digital painting of {prompt}, concept art, confident brushwork, detailed illustration",
    "Photographic": "photograph of {prompt}, 35mm lens, natural light, sharp focus, realistic texture",
    "Pixel art": "pixel art of {prompt}, 16-bit game sprite, limited palette, crisp square pixels",
    "Fantasy art": "fantasy artwork of {prompt}, magical atmosphere, epic scale, painterly detail",
    "Neonpunk": "neonpunk scene of {prompt}, glowing neon signs, magenta and cyan haze, futuristic city",
    "Manga": "manga panel of {prompt}, black ink, screentone shading, dynamic linework",
}


def apply_style(style: str, prompt: str) -> str:
    """The prompt wrapped in the style's template (an empty prompt becomes "a scene"); an unknown
    style is an error that lists the styles."""
    if style not in STYLES:
        raise InputError(f"style={style!r} is not one of: {', '.join(STYLES)}")
    if style == NO_STYLE:
        return prompt
    return STYLES[style].format(prompt=prompt.strip() or EMPTY_SUBJECT)
