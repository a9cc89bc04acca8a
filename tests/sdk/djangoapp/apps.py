from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "sdk.djangoapp"
    label = "shop"
    default_auto_field = "django.db.models.AutoField"
